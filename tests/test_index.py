import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from t2iverw.build import BuildDir
from t2iverw.errors import T2IError
from t2iverw.index import PROGRESS, build_index
from t2iverw.synth import write_sample


@pytest.fixture
def source(synth_root, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(synth_root, dst)
    return dst


def _info_lines(root):
    return (root / "train_test_split" / "vehicle_info.txt").read_text().splitlines()


def test_index_reads_every_image(synth_root, tmp_path):
    summary = build_index(synth_root, tmp_path / "b")
    table = BuildDir.open(tmp_path / "b").images().to_pylist()
    assert summary.images == len(_info_lines(synth_root)) - 1 == len(table)
    row = table[0]
    assert row["path"] == f"images/{row['vehicle_id']}/{row['image_id']}.jpg"
    assert row["width"] > 0 and row["height"] > 0 and len(row["sha256"]) == 64
    assert not (tmp_path / "b" / PROGRESS).exists()


def test_bad_inputs_are_rejected_with_reasons(source, tmp_path):
    lines = _info_lines(source)
    vid, img = lines[1].split(";")[0].split("/")
    (source / "images" / vid / f"{img}.jpg").unlink()  # missing file
    vid2, img2 = lines[2].split(";")[0].split("/")
    corrupt = source / "images" / vid2 / f"{img2}.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])  # truncated JPEG
    lines.insert(3, "garbage line without separators")
    (source / "train_test_split" / "vehicle_info.txt").write_text("\n".join(lines) + "\n")

    summary = build_index(source, tmp_path / "b")
    assert summary.images == len(lines) - 1 - 3
    assert summary.rejected == {"missing file": 1, "corrupt image": 1, "malformed metadata line": 1}
    rejected = [json.loads(x) for x in (tmp_path / "b" / "rejected.jsonl").read_text().splitlines()]
    reasons = " | ".join(r["reason"] for r in rejected)
    assert f"missing file images/{vid}/{img}.jpg" in reasons and f"corrupt image images/{vid2}/{img2}.jpg" in reasons
    assert "malformed metadata line 4" in reasons


def test_selection_is_reproducible(synth_root, tmp_path):
    a = build_index(synth_root, tmp_path / "a", limit_ids=5, max_per_id=2, seed=3)
    build_index(synth_root, tmp_path / "b", limit_ids=5, max_per_id=2, seed=3)
    ta, tb = (pq.read_table(tmp_path / d / "images.parquet") for d in "ab")
    assert a.identities == 5 and a.images <= 10 and ta.equals(tb)
    c = build_index(synth_root, tmp_path / "c", limit_ids=5, max_per_id=2, seed=4)
    assert set(pq.read_table(tmp_path / "c" / "images.parquet").column("image_id").to_pylist()) != set(
        ta.column("image_id").to_pylist()) or c.images != a.images


def test_list_selects_exactly(synth_root, tmp_path):
    wanted = [line.split(";")[0] for line in _info_lines(synth_root)[1:]][::3]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(wanted + ["99999/999999"]) + "\n")
    summary = build_index(synth_root, tmp_path / "b", list_file=listing)
    got = BuildDir.open(tmp_path / "b").images(["vehicle_id", "image_id"]).to_pylist()
    assert sorted(f"{r['vehicle_id']}/{r['image_id']}" for r in got) == sorted(wanted)
    assert summary.rejected == {"not in vehicle_info.txt": 1}


def test_missing_root_and_empty_result_are_errors(tmp_path):
    with pytest.raises(T2IError, match="does not exist"):
        build_index(tmp_path / "nope", tmp_path / "b")
    (tmp_path / "empty" / "train_test_split").mkdir(parents=True)
    (tmp_path / "empty" / "train_test_split" / "vehicle_info.txt").write_text("id;a;b;c;d;e\n00001/000001;1;t;m;s;red\n")
    with pytest.raises(T2IError, match="no usable images"):
        build_index(tmp_path / "empty", tmp_path / "b")


def test_resume_reuses_logged_results_and_ignores_a_torn_line(synth_root, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    first = _info_lines(synth_root)[1].split(";")[0]
    vid, img = first.split("/")
    logged = {"path": f"images/{vid}/{img}.jpg", "ok": True, "width": 999, "height": 7, "sha256": "0" * 64}
    (out / PROGRESS).write_text(json.dumps(logged) + "\n" + '{"path": "images/x/y.jpg", "ok": tr')
    build_index(synth_root, out)
    rows = {r["image_id"]: r for r in BuildDir.open(out).images().to_pylist()}
    assert rows[img]["width"] == 999  # taken from the log, not decoded again
    assert len(rows) == len(_info_lines(synth_root)) - 1


def test_killed_index_resumes_to_the_same_result(tmp_path):
    src = tmp_path / "src"
    write_sample(src, ids=100, per_id=(8, 8), seed=1)  # 800 images: progress is logged every 256
    build_index(src, tmp_path / "clean")
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "t2iverw.cli", "index", str(src), "--out", str(killed), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _lines(killed / PROGRESS) == 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = _lines(killed / PROGRESS)
    assert 0 < logged < 800 and not (killed / "images.parquet").exists(), "the kill must land mid-work"

    build_index(src, killed)
    clean, resumed = (pq.read_table(tmp_path / d / "images.parquet") for d in ("clean", "killed"))
    assert resumed.equals(clean) and resumed.num_rows == 800


def _lines(path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0
