"""`t2iverw import-release`: a release written by the test-side writer becomes a normal build."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.constants import MAX_CAPTION_CHARS, PARTS
from t2iverw.grid import unpack_grid
from t2iverw.release.importer import GALLERY_ORDER, QUERY_ORDER, import_release

ANNOTATIONS = "reid_with_mask_prompt_and_boxes_filepath_prefixid_idsplit_70_30.json"


@pytest.fixture
def release(tmp_path, release_writer):
    root = tmp_path / "T2I_VeRi_new"
    return root, release_writer(root, ids=7, per_id=(2, 3), captions_per_image=2)


def _records(build: Path, stage: str) -> list[dict]:
    path = build / stage / "import.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_import_gives_a_normal_build(release, tmp_path):
    root, written = release
    summary = import_release(root, tmp_path / "build")
    bd = BuildDir.open(tmp_path / "build")
    records = written["records"]
    rows = {r["image_id"]: r for r in bd.images().to_pylist()}
    assert summary.images == len(records) == len(rows) and not summary.rejected
    for rec in records:
        row = rows[Path(rec["file_path"]).stem]
        data = (root / rec["file_path"]).read_bytes()
        assert row["vehicle_id"] == str(rec["id"]) and row["path"] == rec["file_path"]
        assert (row["width"], row["height"]) == Image.open(root / rec["file_path"]).size
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert bd.image_path(rows[Path(records[0]["file_path"]).stem]["path"]).is_file()  # resolves in the release root

    split = bd.split()  # "val" is the test side: T2I-VeRW has no "test" records
    assert split["test_ids"] == sorted({str(r["id"]) for r in records if r["split"] == "val"})
    assert split["train_ids"] == sorted({str(r["id"]) for r in records if r["split"] == "train"})
    assert split["seed"] is None and split["test_ratio"] is None

    captions, parts, extra = bd.captions(), bd.parts(), bd.latest("release")
    for rec in records:
        image_id = Path(rec["file_path"]).stem
        assert captions[image_id]["texts"] == rec["captions"] and captions[image_id]["text"] == rec["captions"][0]
        assert captions[image_id]["source"] == "release" and "masks" not in parts[image_id]
        grids = [unpack_grid(h, (24, 24)) for h in parts[image_id]["grid"]["cells"]]
        want = written["parts"][rec["file_path"]]  # categories OR-merged, absent parts empty
        for part, grid in zip(PARTS, grids):
            assert np.array_equal(grid, np.array(want.get(part, np.zeros((24, 24), int)), bool)), (image_id, part)
        got = extra[image_id]
        assert (got["split"], got["file_path"], got["prompt"]) == (rec["split"], rec["file_path"], rec.get("prompt"))
        assert got["boxes"] == rec["boxes"].replace("\\", "/")
        assert (got["mask"] is None) == ("mask" not in rec)
        if "mask" in rec:
            assert np.array_equal(unpack_grid(got["mask"], (24, 24)), np.array(rec["mask"], bool))
        assert got["augmented"]["dark"] == rec["file_path"].replace("image/", "Darkimage/dark_")

    test = [r for r in records if r["split"] == "val"]  # the authors' loader order
    queries = (tmp_path / "build" / QUERY_ORDER).read_text().split()
    assert queries == [Path(r["file_path"]).stem + ("" if k == 0 else f"#{k}") for r in test for k in range(2)]
    assert (tmp_path / "build" / GALLERY_ORDER).read_text().split() == [Path(r["file_path"]).stem for r in test]


def test_export_load_and_eval_an_imported_build(release, tmp_path):
    import datasets

    root, written = release
    import_release(root, tmp_path / "build")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "build"), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    n = len(written["records"])  # a release has grids only: the summary and the card do not call them masks
    assert f"part grids on {n}/{n} rows, full-resolution part masks on 0/{n} rows" in result.output
    assert "full-resolution part masks on 0 rows" in (tmp_path / "ds" / "README.md").read_text()
    first = Path(written["records"][0]["file_path"]).stem  # `show` draws the grids (a release has no masks)
    shown = CliRunner().invoke(cli, ["show", str(tmp_path / "build"), first, "--out", str(tmp_path / "s.png")])
    assert shown.exit_code == 0 and Image.open(tmp_path / "s.png").size[0] > 100, shown.output
    ds = datasets.load_dataset(str(tmp_path / "ds"))
    by_id = {r["file_path"]: r for r in written["records"]}
    for row in ds["train"]:
        rec = by_id[row["path"]]
        assert row["captions"] == rec["captions"] and row["caption_source"] == "release"
        assert row["part_masks"] is None and row["part_scores"] is None and row["part_grid"] is not None
        assert row["prompt"] == rec["prompt"] and np.array_equal(np.array(row["mim_seed"]), np.array(rec["mask"], bool))

    # a score matrix in the authors' order (test captions, then test images, as their loader lists them)
    queries = (tmp_path / "build" / QUERY_ORDER).read_text().split()
    gallery = (tmp_path / "build" / GALLERY_ORDER).read_text().split()
    vehicle = {Path(r["file_path"]).stem: r["id"] for r in written["records"]}
    perfect = np.array([[float(vehicle[q.split("#")[0]] == vehicle[g]) for g in gallery] for q in queries])
    np.save(tmp_path / "scores.npy", perfect)
    for dataset in (tmp_path / "build", tmp_path / "ds"):
        result = CliRunner().invoke(cli, ["eval", str(dataset), "--scores", str(tmp_path / "scores.npy"), "--json",
                                          "--query-ids", str(tmp_path / "build" / QUERY_ORDER),
                                          "--gallery-ids", str(tmp_path / "build" / GALLERY_ORDER)])
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.output)
        assert metrics["queries"] == len(queries) == 2 * len(gallery) and metrics["mAP"] == 100.0


def _bad(path: Path, mutate) -> None:
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))


def test_bad_inputs_are_rejected_with_reasons(release, tmp_path):
    root, written = release
    records = written["records"]
    part = lambda n: root / records[n]["boxes"].replace("\\", "/")  # noqa: E731
    part(0).unlink()  # a missing part file
    _bad(part(1), lambda d: d[0].__setitem__("category", "hood"))  # a category outside the six
    _bad(part(2), lambda d: d[0].__setitem__("mask", d[0]["mask"][:23]))  # not 24x24
    _bad(part(3), lambda d: d[0]["mask"][5].__setitem__(7, 2))  # not binary
    duplicate = dict(records[4], captions=["a second record of the same crop"])
    records_on_disk = records + [duplicate]  # a duplicate file_path
    (root / ANNOTATIONS).write_text(json.dumps(records_on_disk))

    result = CliRunner().invoke(cli, ["import-release", str(root), "--out", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    rejected = [json.loads(x) for x in (tmp_path / "build" / "rejected.jsonl").read_text().splitlines()]
    reasons = {r["record"]: r["reason"] for r in rejected}
    assert "part file" in reasons[0] and "missing" in reasons[0]
    assert "'hood'" in reasons[1] and "not one of windows" in reasons[1]
    assert "not a 24x24 grid" in reasons[2]
    assert "not binary" in reasons[3]
    assert "duplicate file_path" in reasons[len(records)] and 4 not in reasons
    assert len(rejected) == 5
    kept = set(BuildDir.open(tmp_path / "build").images(["image_id"]).column("image_id").to_pylist())
    assert kept == {Path(r["file_path"]).stem for r in records[4:]}  # nothing else dropped
    assert "rejected 5 records" in result.output


def _targets_outside(root: Path, tmp_path: Path) -> Path:
    """A crop and a part file outside the release root, and three links from inside it to them
    (image/link.jpg, the folder image/linkdir, linked_parts.json); returns the outside folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(outside / "outside.jpg")
    (outside / "parts.json").write_text(json.dumps([{"category": "roof", "mask": [[1] * 24] * 24}]))
    os.symlink(outside / "outside.jpg", root / "image" / "link.jpg")
    os.symlink(outside, root / "image" / "linkdir")
    os.symlink(outside / "parts.json", root / "linked_parts.json")
    return outside


def test_hostile_records_are_rejected_and_nothing_leaves_the_root(release, tmp_path):
    """Paths that leave the release root (absolute, `..`, a symlink), fields of the wrong type, a 1 MB caption,
    a part file of the wrong shape: each record is rejected with its reason, the rest is imported, and
    nothing outside the root is read into the build."""
    root, written = release
    records = [dict(r) for r in written["records"]]
    outside = _targets_outside(root, tmp_path)
    hostile = {
        0: {"file_path": str(outside / "outside.jpg")},  # absolute
        1: {"file_path": "image/../../outside/outside.jpg"},
        2: {"file_path": "image/link.jpg"},  # a symlink leaving the root
        3: {"file_path": "image/linkdir/outside.jpg"},  # through a linked folder
        4: {"boxes": "linked_parts.json"},  # the part file, linked out
        5: {"id": 3.5},
        6: {"id": "abc"},
        7: {"captions": "a string, not a list"},
        8: {"captions": ["fine", 7]},
        9: {"captions": ["x" * 1_000_000]},  # 1 MB
        10: {"split": ["train"]},
    }
    for n, change in hostile.items():
        records[n].update(change)
    first_train = next(n for n, r in enumerate(records) if n > 10 and r["split"] == "train")
    records[first_train]["captions"] = []  # a train record with nothing to train on
    box = root / records[first_train + 1]["boxes"].replace("\\", "/")
    box.write_text(json.dumps({"category": "roof", "mask": [[1] * 24] * 24}))  # an object, not a list
    (root / ANNOTATIONS).write_text(json.dumps(records))
    result = CliRunner().invoke(cli, ["import-release", str(root), "--out", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    reasons = {r["record"]: r["reason"] for r in map(json.loads, (tmp_path / "build" / "rejected.jsonl").open())}
    for n in (0, 1):
        assert "is not a path inside the release root" in reasons[n], reasons[n]
    for n in (2, 3, 4):
        assert "leaves the release root" in reasons[n], reasons[n]
    assert "is not an integer" in reasons[5] and "is not an integer" in reasons[6]
    assert "captions must be a list of strings" in reasons[7] and "captions must be a list of strings" in reasons[8]
    assert "1,000,000 characters" in reasons[9]
    assert "split" in reasons[10]
    assert "no caption" in reasons[first_train]
    assert "not a list of instances" in reasons[first_train + 1]
    assert set(reasons) == {*hostile, first_train, first_train + 1}
    bd = BuildDir.open(tmp_path / "build")
    kept = set(bd.images(["image_id"]).column("image_id").to_pylist())
    assert kept == {Path(r["file_path"]).stem for n, r in enumerate(records) if n not in reasons}
    assert "outside" not in kept and "link" not in kept
    assert all(len(t) <= MAX_CAPTION_CHARS for r in bd.captions().values() for t in r["texts"])


def test_missing_annotations_and_a_train_record_without_boxes(release, tmp_path):
    root, written = release
    train = next(n for n, r in enumerate(written["records"]) if r["split"] == "train")
    _bad(root / ANNOTATIONS, lambda d: d[train].pop("boxes"))
    import_release(root, tmp_path / "build")
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "build" / "rejected.jsonl").read_text().splitlines()]
    assert reasons == [f"record {train} is a train record without 'boxes' (its part file)"]
    result = CliRunner().invoke(cli, ["import-release", str(tmp_path), "--out", str(tmp_path / "b2")])
    assert result.exit_code == 2 and "holds no annotation file this command reads" in result.output


def test_veri_wild_join(release, tmp_path):
    root, written = release
    vw = tmp_path / "VERI-Wild" / "train_test_split"
    vw.mkdir(parents=True)
    lines = ["id;Camera ID;Time;Model;Type;Color"]
    for rec in written["records"][:-1]:  # the release names files <id>_<image id>; the last one is not in VERI-Wild
        vid, image = Path(rec["file_path"]).stem.split("_")
        lines.append(f"{int(vid):05d}/{image};{len(lines)};2018-03-01 06:00:00;Galt-Nova;SUV;red")
    (vw / "vehicle_info.txt").write_text("\n".join(lines) + "\n")
    summary = import_release(root, tmp_path / "build", veri_wild=tmp_path / "VERI-Wild")
    rows = {r["path"]: r for r in BuildDir.open(tmp_path / "build").images().to_pylist()}
    first, last = written["records"][0]["file_path"], written["records"][-1]["file_path"]
    assert (rows[first]["camera_id"], rows[first]["model"], rows[first]["color"]) == ("1", "Galt-Nova", "red")
    assert rows[last]["camera_id"] is None
    assert summary.joined["joined"] == len(written["records"]) - 1 and summary.joined["unmatched"] == 1


def test_rerun_appends_nothing_and_a_killed_import_resumes(tmp_path, release_writer):
    root = tmp_path / "T2I_VeRi_new"
    release_writer(root, ids=120, per_id=(5, 5), copies=False)  # 600 crops: decoding is logged every 256
    import_release(root, tmp_path / "clean")
    before = {s: len(_records(tmp_path / "clean", s)) for s in ("captions", "parts", "release")}
    import_release(root, tmp_path / "clean")  # a rerun on a complete build
    assert {s: len(_records(tmp_path / "clean", s)) for s in before} == before == dict.fromkeys(before, 600)

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "t2iverw.cli", "import-release", str(root), "--out", str(killed), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = killed / ".index-progress.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if progress.exists() and progress.read_bytes().count(b"\n") > 0:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = progress.read_bytes().count(b"\n")
    assert 0 < logged < 600 and not (killed / "images.parquet").exists(), "the kill must land mid-work"
    import_release(root, killed)
    assert BuildDir.open(killed).images().equals(BuildDir.open(tmp_path / "clean").images())
    for stage in before:
        strip = lambda recs: sorted(json.dumps({k: v for k, v in r.items()  # noqa: E731
                                                if k not in ("run", "seq", "t", "time")}, sort_keys=True) for r in recs)
        assert strip(_records(killed, stage)) == strip(_records(tmp_path / "clean", stage))


def test_batches_of_two_records_import_what_one_batch_does(release, tmp_path, monkeypatch):
    """The annotation list is streamed a batch at a time: with batches of 2 records (many
    batches, a duplicate and a bad part file falling in later ones) the build is the same."""
    import t2iverw.release.importer as importer

    root, written = release
    records = written["records"]
    _bad(root / records[5]["boxes"].replace("\\", "/"), lambda d: d[0].__setitem__("category", "hood"))
    (root / ANNOTATIONS).write_text(json.dumps(records + [dict(records[1], captions=["again"])]))
    whole = import_release(root, tmp_path / "whole")
    monkeypatch.setattr(importer, "BATCH", 2)
    batched = import_release(root, tmp_path / "batched")
    assert batched.images == whole.images == len(records) - 1 and batched.rejected == whole.rejected
    for name in ("images.parquet",):
        assert BuildDir.open(tmp_path / "batched").images().equals(BuildDir.open(tmp_path / "whole").images()), name
    for name in ("rejected.jsonl", "split.json", QUERY_ORDER, GALLERY_ORDER):
        assert (tmp_path / "batched" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    for stage in ("captions", "parts", "release"):
        body = lambda recs: sorted(json.dumps({k: v for k, v in r.items()  # noqa: E731
                                               if k not in ("run", "seq", "t", "time")}, sort_keys=True) for r in recs)
        assert body(_records(tmp_path / "batched", stage)) == body(_records(tmp_path / "whole", stage))
    assert not (tmp_path / "batched" / ".import-staging.jsonl").exists()


def test_a_file_that_breaks_after_its_first_records_builds_nothing(release, tmp_path):
    """Streaming finds a syntax error only when it gets there: the records before it were read
    (and their crops decoded), yet the import refuses in one line and leaves no build."""
    root, written = release
    text = json.dumps(written["records"])
    (root / ANNOTATIONS).write_text(text[:-1] + ', {"id": 1,]')
    result = CliRunner().invoke(cli, ["import-release", str(root), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "is not valid JSON" in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        line for line in result.output.splitlines() if "not valid JSON" in line]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [".index.lock"]
    (root / ANNOTATIONS).write_text('{"records": []}')
    result = CliRunner().invoke(cli, ["import-release", str(root), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "must hold a JSON list of records, got an object" in result.output


def test_boxes_absolute_or_with_dotdot_are_rejected(release, tmp_path):
    """`boxes` is a path too: absolute or climbing out with `..`, it is refused before the part file is
    opened, though the file it names exists and is a valid part file (so only the path check can stop it)."""
    root, written = release
    records = [dict(r) for r in written["records"]]
    secret = tmp_path / "secret.json"  # root/boxes/../../secret.json is this file
    secret.write_text(json.dumps([{"category": "roof", "mask": [[1] * 24] * 24}]))
    records[0]["boxes"] = str(secret)
    records[1]["boxes"] = "boxes/../../secret.json"
    (root / ANNOTATIONS).write_text(json.dumps(records))
    result = CliRunner().invoke(cli, ["import-release", str(root), "--out", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    reasons = {r["record"]: r["reason"] for r in map(json.loads, (tmp_path / "build" / "rejected.jsonl").open())}
    assert reasons == {0: f"record 0: boxes {str(secret)!r} is not a path inside the release root",
                       1: "record 1: boxes 'boxes/../../secret.json' is not a path inside the release root"}
    kept = set(BuildDir.open(tmp_path / "build").images(["image_id"]).column("image_id").to_pylist())
    assert kept == {Path(r["file_path"]).stem for r in records[2:]}  # nothing else dropped


def test_a_val_record_with_no_caption_is_a_gallery_image(release, tmp_path):
    """On purpose: a test-side record with `captions: []` is imported. It is a gallery image no query
    describes (the authors' loader lists it among the test images and adds no caption), so refusing it
    would change the gallery every score matrix of theirs is laid out on. Only a train record needs one."""
    root, written = release
    records = [dict(r) for r in written["records"]]
    n = next(k for k, r in enumerate(records) if r["split"] == "val")
    records[n]["captions"] = []
    (root / ANNOTATIONS).write_text(json.dumps(records))
    summary = import_release(root, tmp_path / "build")
    image = Path(records[n]["file_path"]).stem
    bd = BuildDir.open(tmp_path / "build")
    assert not summary.rejected and (tmp_path / "build" / "rejected.jsonl").read_text() == ""
    assert image in set(bd.images(["image_id"]).column("image_id").to_pylist())
    assert image not in bd.captions() and image in bd.parts()  # no caption record; its parts are kept
    assert str(records[n]["id"]) in bd.split()["test_ids"]
    assert image in (tmp_path / "build" / GALLERY_ORDER).read_text().split()
    queries = (tmp_path / "build" / QUERY_ORDER).read_text().split()
    assert not [q for q in queries if q.split("#")[0] == image]
    assert len(queries) == 2 * sum(r["split"] == "val" for r in records) - 2  # every other val caption is a query


def _tree(top: Path, skip: Path) -> dict[str, tuple]:
    """Every entry under `top` but `skip`: its kind, its bytes' SHA-256 (a file) or target (a link), its mtime."""
    entries = {}
    for folder, dirs, files in os.walk(top):  # links are listed, not followed
        if Path(folder) == skip:
            dirs.clear()
            continue
        for name in dirs + files:
            path = Path(folder) / name
            if path == skip:
                continue
            st = path.lstat()
            if path.is_symlink():
                entries[str(path)] = ("link", os.readlink(path), st.st_mtime_ns)
            elif path.is_dir():
                entries[str(path)] = ("dir", None, st.st_mtime_ns)
            else:
                entries[str(path)] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
    return entries


def test_a_hostile_release_writes_nothing_outside_the_build(release, tmp_path, monkeypatch):
    """Everything under tmp_path but the build (the release root, the files outside it that its paths
    point at, the working directory) is the same before and after importing a release whose paths try to
    leave the root: no file is written, changed, linked or removed there."""
    root, written = release
    records = [dict(r) for r in written["records"]]
    outside = _targets_outside(root, tmp_path)
    for n, change in enumerate([{"file_path": str(outside / "outside.jpg")},
                                {"file_path": "image/../../outside/outside.jpg"},
                                {"file_path": "image/link.jpg"}, {"file_path": "image/linkdir/outside.jpg"},
                                {"boxes": str(outside / "parts.json")}, {"boxes": "boxes/../../outside/parts.json"},
                                {"boxes": "linked_parts.json"}]):
        records[n].update(change)
    (root / ANNOTATIONS).write_text(json.dumps(records))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # a stray relative write would land here
    build = tmp_path / "build"
    before = _tree(tmp_path, build)
    result = CliRunner().invoke(cli, ["import-release", str(root), "--out", str(build)])
    assert result.exit_code == 0, result.output
    assert _tree(tmp_path, build) == before
    reasons = {r["record"] for r in map(json.loads, (build / "rejected.jsonl").open())}
    assert reasons == set(range(7))
