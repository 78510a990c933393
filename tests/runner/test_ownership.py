"""One writer per log across processes; shards side by side; readers never disturb a live log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.runner import LogBusy, open_log, shard_of

HOLD = textwrap.dedent("""
    import sys, time
    from t2iverw.runner import open_log
    build, stage, log, n = sys.argv[1:5]
    ids = __import__("t2iverw.build", fromlist=["BuildDir"]).BuildDir.open(build).images(["image_id"]).column(
        "image_id").to_pylist()
    with open_log(build, stage, log, source="model", settings={"model": "holder"}) as w:
        print("held", flush=True)
        for i in range(int(n)):  # keep appending while the parent reads
            w.append([{"image_id": ids[i % len(ids)], "status": "ok", "text": "x" * 2000}])
        sys.stdin.readline()
""")


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds a log (optionally appending n records), until the test ends."""
    procs = []

    def start(build, stage="captions", log="main", n=0):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(build), stage, log, str(n)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_a_second_process_on_the_same_shard_is_refused_with_the_holder(build_dir, holder):
    proc = holder(build_dir, log="shard-00001-of-00002")
    with pytest.raises(LogBusy, match=rf"pid {proc.pid} on host {socket.gethostname()}"):
        with open_log(build_dir, "captions", "shard-00001-of-00002", source="model", settings={}):
            pass
    result = CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "template", "--shard", "1/2"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"is being written by pid {proc.pid}" in result.output
    # the refused run wrote nothing; the other shard runs side by side
    assert not BuildDir.open(build_dir).latest("captions")
    ok = CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "template", "--shard", "0/2"])
    assert ok.exit_code == 0, ok.output
    done = BuildDir.open(build_dir).captions()
    assert done and all(shard_of(i, 2) == 0 for i in done)


def test_a_run_over_another_split_of_the_images_is_refused(build_dir, holder):
    holder(build_dir, log="shard-00000-of-00004")
    whole = CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "template"])
    assert whole.exit_code == 2 and "another split of the images" in whole.output
    other_n = CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "template", "--shard", "1/2"])
    assert other_n.exit_code == 2 and "use the same --shard i/N" in other_n.output
    same_n = CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "template", "--shard", "1/4"])
    assert same_n.exit_code == 0, same_n.output


def test_two_shards_in_parallel_are_disjoint_and_complete(build_dir):
    cmds = [[sys.executable, "-m", "t2iverw.cli", "caption", str(build_dir), "--backend", "template",
             "--shard", f"{i}/2"] for i in range(2)]
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in cmds]
    assert [p.wait(timeout=120) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    ids = BuildDir.open(build_dir).images(["image_id"]).column("image_id").to_pylist()
    for i in range(2):
        lines = (build_dir / "captions" / f"shard-0000{i}-of-00002.jsonl").read_text().splitlines()
        logged = [json.loads(line)["image_id"] for line in lines]
        assert len(logged) == len(set(logged)) and all(shard_of(x, 2) == i for x in logged)
    assert sorted(BuildDir.open(build_dir).captions()) == sorted(ids)


def test_readers_during_a_live_writer_see_whole_records_and_change_nothing(build_dir, holder):
    n = 400
    proc = holder(build_dir, log="shard-00000-of-00002", n=n)
    path = build_dir / "captions" / "shard-00000-of-00002.jsonl"
    seen = []
    while True:  # read while it appends: every read parses; the number of records only grows
        records = BuildDir.open(build_dir).latest("captions")
        CliRunner().invoke(cli, ["caption-qa", str(build_dir)], catch_exceptions=False)
        seen.append(sum(1 for _ in path.open("rb")) if path.exists() else 0)
        if seen[-1] >= n:
            break
    assert records is not None and seen == sorted(seen) and len(set(seen)) > 2  # it really was live
    proc.stdin.close()
    proc.wait(timeout=60)
    lines = path.read_text().splitlines()
    assert len(lines) == n and all(json.loads(line)["status"] == "ok" for line in lines)
    assert Counter(json.loads(line)["seq"] for line in lines) == Counter(range(1, n + 1))
    assert not path.with_name(path.name + ".owner").exists()  # released cleanly


def test_a_killed_holder_releases_its_log(build_dir, holder):
    proc = holder(build_dir, log="main")
    proc.kill()
    proc.wait()
    with open_log(build_dir, "captions", "main", source="model", settings={}) as log:
        assert log.run  # the kernel released the lock with the process
    assert os.path.exists(build_dir / "captions" / "main.jsonl.lock")
