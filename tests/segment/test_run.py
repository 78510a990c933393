"""The segment stage on the runner with a tiny SAM3: records, shards, resume after a kill, bad images."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

from t2iverw.build import BuildDir
from t2iverw.constants import PARTS
from t2iverw.index import build_index
from t2iverw.runner import pending, shard_of
from t2iverw.segment.run import SegmentWorker, segment_build


def _all_ids(build: BuildDir) -> list[str]:
    return build.images(["image_id"]).column("image_id").to_pylist()


def _log_lines(build: BuildDir, name: str = "*") -> list[dict]:
    return [json.loads(line) for p in sorted((build.root / "parts").glob(f"{name}.jsonl"))
            for line in p.read_text().splitlines()]


def _worker(tiny_sam3_dir, low_parts_file, segmenter, **kw) -> SegmentWorker:
    return SegmentWorker(str(tiny_sam3_dir), low_parts_file, segmenter=segmenter, **kw)


def test_segment_writes_one_valid_record_per_image(build_dir, tiny_sam3_dir, low_parts_file, segmenter):
    build = BuildDir.open(build_dir)
    report = segment_build(build, _worker(tiny_sam3_dir, low_parts_file, segmenter, batch_size=3), progress=False)
    ids = _all_ids(build)
    assert report.ok == report.pending == len(ids) and not report.failed
    parts = build.parts()
    assert sorted(parts) == sorted(ids)
    rec = parts[ids[0]]
    assert len(rec["masks"]) == len(rec["scores"]) == len(rec["instances"]) == len(rec["area"]) == len(PARTS)
    assert rec["grid"]["shape"] == [24, 24] and rec["grid"]["input_size"] == 384 and len(rec["grid"]["cells"]) == 6
    settings = rec["settings"]
    assert settings["model"] == tiny_sam3_dir.name and settings["revision"].startswith("sha256:")
    assert settings["thresholds"] == {p: 0.251 for p in PARTS} and settings["grid"] == [24, 24]
    assert len(settings["parts_sha256"]) == 64 and settings["input_size"] == 384 and settings["min_cover"] == 0.5
    again = segment_build(build, _worker(tiny_sam3_dir, low_parts_file, segmenter), progress=False)
    assert again.pending == 0 and len(_log_lines(build)) == len(ids)


def test_shards_cover_every_image_exactly_once(build_dir, tiny_sam3_dir, low_parts_file, segmenter):
    build = BuildDir.open(build_dir)
    ids = _all_ids(build)
    settings = _worker(tiny_sam3_dir, low_parts_file, segmenter).settings()
    slices = [[i.image_id for i in pending(build, "parts", settings, shard=(i, 3)).items] for i in range(3)]
    assert sorted(sum(slices, [])) == sorted(ids) and all(slices)
    # the slice is a function of the id alone, not of list order or position
    assert [shard_of(i, 3) for i in reversed(ids)] == [shard_of(i, 3) for i in ids][::-1]

    for i in range(3):
        segment_build(build, _worker(tiny_sam3_dir, low_parts_file, segmenter), shard=(i, 3), limit=2,
                      progress=False)
    for i, ids_i in enumerate(slices):
        logged = [r["image_id"] for r in _log_lines(build, f"shard-{i:05d}-of-00003")]
        assert logged == ids_i[:2]
        assert [x.image_id for x in pending(build, "parts", settings, shard=(i, 3)).items] == ids_i[2:]


def test_resume_after_kill_loses_nothing_and_duplicates_nothing(build_dir, tiny_sam3_dir, low_parts_file, segmenter):
    build = BuildDir.open(build_dir)
    ids = _all_ids(build)
    log = build_dir / "parts" / "main.jsonl"
    cmd = [sys.executable, "-m", "t2iverw.cli", "segment", str(build_dir), "--model", str(tiny_sam3_dir),
           "--parts", str(low_parts_file), "--device", "cpu", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while (not log.exists() or log.read_text().count("\n") < 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = log.read_text().count("\n")
    assert 2 <= done_before < len(ids), "the run was not cut short"
    with log.open("a") as fh:  # a write torn by the kill
        fh.write('{"image_id": "' + ids[-1] + '", "status": "o')

    rerun = segment_build(build, _worker(tiny_sam3_dir, low_parts_file, segmenter, batch_size=8), progress=False)
    assert rerun.ok == len(ids) - done_before
    counts = Counter(r["image_id"] for r in _log_lines(build))
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
    assert all(r["status"] == "ok" for r in build.latest("parts").values())


def test_corrupt_image_is_recorded_as_failed_and_the_rest_are_segmented(synth_root, tmp_path, tiny_sam3_dir,
                                                                        low_parts_file, segmenter):
    source = tmp_path / "source"
    shutil.copytree(synth_root, source)
    build_index(source, tmp_path / "build")
    build = BuildDir.open(tmp_path / "build")
    rows = build.images(["image_id", "path"]).to_pylist()
    bad = rows[1]
    path = build.image_path(bad["path"])
    path.write_bytes(path.read_bytes()[:200])  # truncated after indexing

    report = segment_build(build, _worker(tiny_sam3_dir, low_parts_file, segmenter, batch_size=4), progress=False)
    assert [r["image_id"] for r in report.examples] == [bad["image_id"]] and report.failed == {"bad_image": 1}
    assert "unreadable image" in report.examples[0]["detail"] and bad["path"] in report.examples[0]["detail"]
    assert report.ok == len(rows) - 1
    assert build.latest("parts")[bad["image_id"]]["status"] == "failed"
    assert sorted(build.parts()) == sorted(r["image_id"] for r in rows if r is not bad)

    shutil.copy(synth_root / bad["path"], path)  # repaired: a retry picks up exactly that image
    worker = _worker(tiny_sam3_dir, low_parts_file, segmenter)
    assert segment_build(build, worker, progress=False).pending == 0  # failures wait for --retry-failed
    assert segment_build(build, worker, retry_failed=True, progress=False).ok == 1
    assert sorted(build.parts()) == sorted(r["image_id"] for r in rows)
