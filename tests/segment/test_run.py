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
from t2iverw.segment.run import pending_images, segment_build, shard_of


def _all_ids(build: BuildDir) -> list[str]:
    return build.images(["image_id"]).column("image_id").to_pylist()


def _log_lines(build: BuildDir, pattern: str = "parts*.jsonl") -> list[dict]:
    return [json.loads(line) for p in sorted(build.root.glob(pattern)) for line in p.read_text().splitlines()]


def test_segment_writes_one_valid_record_per_image(build_dir, segmenter):
    build = BuildDir.open(build_dir)
    report = segment_build(build, segmenter, batch_size=3, progress=False)
    ids = _all_ids(build)
    assert report.segmented == len(ids) and not report.failed
    parts = build.parts()
    assert sorted(parts) == sorted(ids)
    rec = parts[ids[0]]
    assert len(rec["masks"]) == len(rec["scores"]) == len(rec["instances"]) == len(rec["area"]) == len(PARTS)
    assert rec["grid"]["shape"] == [24, 24] and rec["grid"]["input_size"] == 384 and len(rec["grid"]["cells"]) == 6
    assert list(report.coverage) == list(PARTS)
    assert all(0.0 <= c["found"] <= 1.0 and 0.0 <= c["mean_area"] <= 1.0 for c in report.coverage.values())
    again = segment_build(build, segmenter, progress=False)
    assert again.segmented == 0 and len(_log_lines(build)) == len(ids)


def test_shards_cover_every_image_exactly_once(build_dir, segmenter):
    build = BuildDir.open(build_dir)
    ids = _all_ids(build)
    slices = [[r["image_id"] for r in pending_images(build, shard=(i, 3))] for i in range(3)]
    assert sorted(sum(slices, [])) == sorted(ids) and all(slices)
    # the slice is a function of the id alone, not of list order or position
    assert [shard_of(i, 3) for i in reversed(ids)] == [shard_of(i, 3) for i in ids][::-1]

    for i in range(3):
        segment_build(build, segmenter, shard=(i, 3), limit=2, progress=False)
    for i, ids_i in enumerate(slices):
        logged = [r["image_id"] for r in _log_lines(build, f"parts-{i:05d}-of-00003.jsonl")]
        assert logged == ids_i[:2]
        assert [r["image_id"] for r in pending_images(build, shard=(i, 3))] == ids_i[2:]


def test_resume_after_kill_loses_nothing_and_duplicates_nothing(build_dir, tiny_sam3_dir, low_parts_file, segmenter):
    build = BuildDir.open(build_dir)
    ids = _all_ids(build)
    log = build_dir / "parts.jsonl"
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

    rerun = segment_build(build, segmenter, batch_size=8, progress=False)
    assert rerun.segmented == len(ids) - done_before
    counts = Counter(r["image_id"] for r in _log_lines(build))
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
    assert all(r["status"] == "ok" for r in build.latest_records("parts").values())


def test_corrupt_image_is_recorded_as_failed_and_the_rest_are_segmented(synth_root, tmp_path, segmenter):
    source = tmp_path / "source"
    shutil.copytree(synth_root, source)
    build = BuildDir.open(build_index(source, tmp_path / "build") and tmp_path / "build")
    rows = build.images(["image_id", "path"]).to_pylist()
    bad = rows[1]
    path = build.image_path(bad["path"])
    path.write_bytes(path.read_bytes()[:200])  # truncated after indexing

    report = segment_build(build, segmenter, batch_size=4, progress=False)
    assert [r["image_id"] for r in report.failed] == [bad["image_id"]]
    assert "unreadable image" in report.failed[0]["reason"] and bad["path"] in report.failed[0]["reason"]
    assert report.segmented == len(rows) - 1
    latest = build.latest_records("parts")
    assert latest[bad["image_id"]]["status"] == "failed"
    assert sorted(build.parts()) == sorted(r["image_id"] for r in rows if r is not bad)

    shutil.copy(synth_root / bad["path"], path)  # repaired: the rerun picks up exactly that image
    assert segment_build(build, segmenter, progress=False).segmented == 1
    assert sorted(build.parts()) == sorted(r["image_id"] for r in rows)
