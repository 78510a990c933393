import io
import os
import signal
import subprocess
import sys
import time

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from t2iverw.build import BuildDir
from t2iverw.runner import open_log
from t2iverw.constants import GRID
from t2iverw.errors import T2IError
from t2iverw.export import export_dataset
from t2iverw.grid import mask_to_grid, pack_grid
from t2iverw.schema import features
from t2iverw.synth import read_truth


def _annotate(build_dir, every=2):
    """Caption and part records for every `every`-th image, as the caption/segment stages write them."""
    bd = BuildDir.open(build_dir)
    rows = bd.images().to_pylist()[::every]
    with open_log(bd, "captions", "main", source="model", settings={"model": "test"}) as log:
        log.append({"image_id": r["image_id"], "caption_id": r["image_id"], "status": "ok",
                    "text": f"A {r['color']} {r['type']}."} for r in rows)
    with open_log(bd, "parts", "main", source="truth", settings={"model": "synthetic ground truth"}) as log:
        for r in rows:
            truth = read_truth(bd.source_root, f"{r['vehicle_id']}/{r['image_id']}")
            masks = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in truth]
            log.append([{"image_id": r["image_id"], "status": "ok",
                       "masks": [{"size": m["size"], "counts": m["counts"].decode()} for m in masks],
                       "scores": [1.0] * 6, "instances": [1] * 6, "area": [float(m.mean()) for m in truth],
                       "grid": {"shape": list(GRID), "input_size": 384, "min_cover": 0.5,
                                "cells": [pack_grid(mask_to_grid(m)) for m in truth]}}])
    return {r["image_id"]: r for r in rows}


def test_load_dataset_features_splits_and_content(build_dir, tmp_path):
    annotated = _annotate(build_dir)
    summary = export_dataset(build_dir, tmp_path / "ds")
    assert summary.captions == summary.parts == summary.masks == len(annotated)  # masks and grids on every other row
    ds = datasets.load_dataset(str(tmp_path / "ds"))
    assert set(ds) == {"train", "test"}
    assert ds["train"].features == features()
    train_ids, test_ids = set(ds["train"]["vehicle_id"]), set(ds["test"]["vehicle_id"])
    assert train_ids and test_ids and not train_ids & test_ids
    split = BuildDir.open(build_dir).split()
    assert sorted(test_ids) == split["test_ids"]

    for row in ds["test"]:
        assert isinstance(row["image"], Image.Image) and row["image"].size == (row["width"], row["height"])
        if row["image_id"] in annotated:
            assert row["caption"] == f"A {row['color']} {row['type']}."
            truth = read_truth(BuildDir.open(build_dir).source_root, f"{row['vehicle_id']}/{row['image_id']}")
            decoded = mask_utils.decode([{"size": m["size"], "counts": m["counts"].encode()} for m in row["part_masks"]])
            assert np.array_equal(decoded.transpose(2, 0, 1).astype(bool), truth)
            assert np.array_equal(np.array(row["part_grid"]), np.stack([mask_to_grid(m) for m in truth]))
        else:
            assert row["caption"] is None and row["part_masks"] is None and row["part_grid"] is None


def test_image_bytes_are_the_original_jpeg(build_dir, tmp_path):
    export_dataset(build_dir, tmp_path / "ds")
    table = pq.read_table(next((tmp_path / "ds" / "data").glob("test-*.parquet")), columns=["image", "path"])
    first = table.to_pylist()[0]
    original = (BuildDir.open(build_dir).source_root / first["path"]).read_bytes()
    assert first["image"]["bytes"] == original
    assert Image.open(io.BytesIO(first["image"]["bytes"])).format == "JPEG"


def test_no_images_export_loads_and_has_no_pixels(build_dir, tmp_path):
    export_dataset(build_dir, tmp_path / "ds", include_images=False)
    ds = datasets.load_dataset(str(tmp_path / "ds"))
    assert "image" not in ds["train"].features and ds["train"].features == features(with_images=False)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "annotations-only" in card and "cast_column" in card


def test_card_declares_configs_license_and_features(build_dir, tmp_path):
    export_dataset(build_dir, tmp_path / "ds")
    card = datasets.load_dataset_builder(str(tmp_path / "ds"))
    assert card.info.features == features()
    text = (tmp_path / "ds" / "README.md").read_text()
    for needle in ("license: other", "config_name: default", "path: data/train-*", "task_categories", "VERI-Wild",
                   "size_categories", "@inproceedings{lou2019veriwild"):
        assert needle in text


def test_refuses_to_overwrite_foreign_directory_and_replaces_old_export(build_dir, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(T2IError, match="thesis.tex"):
        export_dataset(build_dir, tmp_path / "mine")
    export_dataset(build_dir, tmp_path / "ds")
    export_dataset(build_dir, tmp_path / "ds", include_images=False)
    assert datasets.load_dataset(str(tmp_path / "ds"))["train"].features == features(with_images=False)


def tree(folder) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> content), to check that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["parquet", "pfcvr"])
def test_out_never_replaces_what_the_export_did_not_write(build_dir, tmp_path, fmt):
    """--out at the build, inside it, above it, at a user's folder, or at an earlier export a user has added
    a file to: one Error: line, exit 2, and every file where it was."""
    from click.testing import CliRunner

    from t2iverw.cli import cli

    _annotate(build_dir, every=1)
    export = lambda out: CliRunner().invoke(cli, ["export", str(build_dir), "--out", str(out), "--format", fmt])
    user = tmp_path / "mine"
    user.mkdir()
    (user / "README.md").write_text("my own notes")  # a name the export also writes
    (user / "data").mkdir()
    (user / "data" / "train-00000-of-00001.parquet").write_bytes(b"my own table")
    before = {"build": tree(build_dir), "user": tree(user)}
    for out, says in ((build_dir, "is the build itself"), (build_dir / "dataset", "is inside the build"),
                      (build_dir / "captions", "is inside the build"), (tmp_path, "holds the build"),
                      (user, "did not write")):
        result = export(out)
        assert result.exit_code == 2, (out, result.output)
        assert result.output.startswith("Error:") and says in result.output and len(result.output.splitlines()) == 1
    assert tree(build_dir) == before["build"] and tree(user) == before["user"]
    assert not (build_dir / "dataset").exists()

    earlier = tmp_path / "ds"
    assert export(earlier).exit_code == 0
    (earlier / "thesis.tex").write_text("precious")
    result = export(earlier)
    assert result.exit_code == 2 and "'thesis.tex' was put there since" in result.output
    assert (earlier / "thesis.tex").read_text() == "precious"
    (earlier / "thesis.tex").unlink()
    assert export(earlier).exit_code == 0  # an earlier export alone is replaced


def test_changed_image_is_caught(build_dir, tmp_path):
    row = BuildDir.open(build_dir).images().to_pylist()[0]
    img_path = BuildDir.open(build_dir).source_root / row["path"]
    saved = img_path.read_bytes()
    try:
        img_path.write_bytes(saved + b"\0")
        with pytest.raises(T2IError, match=f"image {row['image_id']} .* changed since"):
            export_dataset(build_dir, tmp_path / "ds")
    finally:
        img_path.write_bytes(saved)  # the source tree is shared by the session
    assert not (tmp_path / "ds").exists()


def test_killed_export_leaves_old_export_intact_and_a_rerun_completes(tmp_path):
    from t2iverw.index import build_index
    from t2iverw.split import make_split
    from t2iverw.synth import write_sample

    write_sample(tmp_path / "src", ids=60, per_id=(8, 8), seed=2)  # enough rows for the kill to land mid-export
    build_index(tmp_path / "src", tmp_path / "build")
    make_split(tmp_path / "build", seed=0)
    out = tmp_path / "ds"
    export_dataset(tmp_path / "build", out, include_images=False)
    old = {p.name: p.read_bytes() for p in (out / "data").iterdir()}

    proc = subprocess.Popen([sys.executable, "-m", "t2iverw.cli", "export", str(tmp_path / "build"), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".ds.partial-*/data/*.parquet")) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".ds.partial-*/data/*.parquet")), "the kill must land while the new export is written"
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == old  # the old export, untouched

    export_dataset(tmp_path / "build", out)
    export_dataset(tmp_path / "build", tmp_path / "clean")
    resumed, clean = (datasets.load_dataset(str(d)) for d in (out, tmp_path / "clean"))
    for split in ("train", "test"):
        assert resumed[split].to_list() == clean[split].to_list() and "image" in resumed[split].features
    assert not list(tmp_path.glob(".ds.partial-*"))


def _shards(out, split):
    return sorted((out / "data").glob(f"{split}-*.parquet"))


def test_shards_with_augmented_copies_stay_within_the_target_and_match_one_shard(build_dir, tmp_path, monkeypatch):
    import t2iverw.export as export

    _annotate(build_dir)
    whole = export_dataset(build_dir, tmp_path / "whole", augmented_copies=True)
    assert whole.shards == {"train": 1, "test": 1}
    files = _shards(tmp_path / "whole", "train")
    copy_bytes = pq.read_table(files[0], columns=["image", "image_dark", "image_light", "image_noisy"]).nbytes
    target = copy_bytes // 5  # about five shards of originals and their three copies
    monkeypatch.setattr(export, "SHARD_BYTES", target)
    monkeypatch.setattr(export, "BATCH_ROWS", 3)  # several batches per shard, cut inside batches
    sharded = export_dataset(build_dir, tmp_path / "sharded", augmented_copies=True)
    assert sharded.shards["train"] >= 4
    for path in _shards(tmp_path / "sharded", "train") + _shards(tmp_path / "sharded", "test"):
        assert path.stat().st_size <= 1.2 * target, path.name
    assert [p.name.split("-of-")[1] for p in _shards(tmp_path / "sharded", "train")] == \
        [f"{sharded.shards['train']:05d}.parquet"] * sharded.shards["train"]
    for split in ("train", "test"):
        one = pq.read_table(_shards(tmp_path / "whole", split)[0])
        many = pq.ParquetDataset(_shards(tmp_path / "sharded", split)).read()
        assert many.equals(one), split


def test_small_batches_and_several_logs_give_the_one_batch_export(build_dir, tmp_path, monkeypatch):
    import t2iverw.export as export

    annotated = _annotate(build_dir)
    ids = sorted(annotated)
    with open_log(BuildDir.open(build_dir), "captions", "shard-00000-of-00002", source="model",
                  settings={"model": "test"}) as log:  # later records in another log: a failure and a new caption
        log.append([{"image_id": ids[0], "caption_id": ids[0], "status": "failed", "reason": "x", "text": ""},
                    {"image_id": ids[1], "caption_id": ids[1], "status": "ok", "text": "A newer caption."}])
    one = export_dataset(build_dir, tmp_path / "one", include_images=False)
    monkeypatch.setattr(export, "BATCH_ROWS", 3)
    many = export_dataset(build_dir, tmp_path / "many", include_images=False)
    assert one.captions == many.captions == len(annotated) - 1 and one.parts == many.parts == len(annotated)
    for split in ("train", "test"):
        a = pq.read_table(_shards(tmp_path / "one", split)[0])
        assert pq.ParquetDataset(_shards(tmp_path / "many", split)).read().equals(a), split
        got = dict(zip(a["image_id"].to_pylist(), a["caption"].to_pylist()))
        assert got.get(ids[0]) is None and got.get(ids[1], "A newer caption.") == "A newer caption."
    card = lambda out: [l for l in (out / "README.md").read_text().splitlines() if "num_bytes" not in l]  # row groups
    assert card(tmp_path / "one") == card(tmp_path / "many")
