"""`t2iverw export --format pfcvr`: the authors' layout, checked by rules written apart from the
exporter, and the round trip through `import-release`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.grid import mask_to_grid, pack_grid, unpack_grid
from t2iverw.release.importer import import_release
from t2iverw.errors import T2IError
from t2iverw.release.pfcvr import MANIFEST, _json_ids, export_pfcvr
from t2iverw.runner import open_log
from t2iverw.synth import read_truth

ANNOTATIONS = "reid_with_mask_prompt_and_boxes_filepath_prefixid_idsplit_70_30.json"


def annotate(build: Path, *, skip_parts: tuple[str, ...] = ()) -> dict[str, dict]:
    """Two captions per image and the true part grids, as the caption and segment stages would record them."""
    bd = BuildDir.open(build)
    rows = bd.images().to_pylist()
    with open_log(bd, "captions", "main", source="model", settings={"model": "test"}) as log:
        log.append({"image_id": r["image_id"], "caption_id": r["image_id"], "status": "ok",
                    "text": f"A {r['color']} {r['type']}.", "texts": [f"A {r['color']} {r['type']}.", "Seen twice."]}
                   for r in rows)
    with open_log(bd, "parts", "main", source="truth", settings={"grid": [24, 24]}) as log:
        log.append({"image_id": r["image_id"], "status": "ok", "grid": {"shape": [24, 24], "cells": [
            pack_grid(mask_to_grid(m)) for m in read_truth(bd.source_root, f"{r['vehicle_id']}/{r['image_id']}")]}}
            for r in rows if r["image_id"] not in skip_parts)
    return {r["image_id"]: r for r in rows}


@pytest.fixture
def annotated(build_dir):
    annotate(build_dir)
    return build_dir


def test_export_follows_the_loader_rules(annotated, tmp_path, release_checker):
    summary = export_pfcvr(annotated, tmp_path / "T2I_VeRi_new", augmented_copies=True)
    assert release_checker(tmp_path / "T2I_VeRi_new") == []
    split = BuildDir.open(annotated).split()
    assert summary.records == {"train": split["counts"]["train"]["images"], "test": split["counts"]["test"]["images"]}
    records = json.loads((tmp_path / "T2I_VeRi_new" / ANNOTATIONS).read_text())
    assert {r["split"] for r in records} == {"train", "val"}  # the test side as T2I-VeRW writes it


def test_the_checker_catches_what_the_loader_would_trip_on(annotated, tmp_path, release_checker):
    root = tmp_path / "T2I_VeRi_new"
    export_pfcvr(annotated, root)
    records = json.loads((root / ANNOTATIONS).read_text())
    train = [n for n, r in enumerate(records) if r["split"] == "train"]
    part = root / records[train[0]]["boxes"]
    instances = json.loads(part.read_text())
    instances[0]["category"] = "hood"
    part.write_text(json.dumps(instances))
    records[train[1]]["mask"] = records[train[1]]["mask"][:-1]
    records[train[2]]["id"] = "x12"
    records[train[3]]["mask"][0][0] = 2
    (root / records[train[4]]["boxes"]).unlink()
    records[train[5]]["file_path"] = "/abs/" + records[train[5]]["file_path"]
    (root / ANNOTATIONS).write_text(json.dumps(records))
    problems = release_checker(root)
    expected = [f"record {train[0]}: part category 'hood'", f"record {train[1]}: mask is not 24x24",
                f"record {train[2]}: id 'x12' fails int()", f"record {train[3]}: mask is not made of the integers",
                f"record {train[4]}: part file", f"record {train[5]}: file_path"]
    for needle in expected:
        assert any(p.startswith(needle) for p in problems), (needle, problems)


def test_round_trip_keeps_ids_split_captions_and_grids(annotated, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(annotated), "--format", "pfcvr", "--out",
                                      str(tmp_path / "T2I_VeRi_new")])
    assert result.exit_code == 0, result.output
    import_release(tmp_path / "T2I_VeRi_new", tmp_path / "again")
    a, b = BuildDir.open(annotated), BuildDir.open(tmp_path / "again")
    rows_a = {r["image_id"]: r for r in a.images().to_pylist()}
    rows_b = {r["image_id"]: r for r in b.images().to_pylist()}
    assert rows_b.keys() == rows_a.keys()
    for i, row in rows_a.items():
        assert (rows_b[i]["vehicle_id"], rows_b[i]["sha256"], rows_b[i]["width"]) == (
            row["vehicle_id"], row["sha256"], row["width"])
    assert (b.split()["train_ids"], b.split()["test_ids"]) == (a.split()["train_ids"], a.split()["test_ids"])
    caps_a, caps_b = a.captions(), b.captions()
    parts_a, parts_b = a.parts(), b.parts()
    for i in rows_a:
        assert caps_b[i]["texts"] == caps_a[i]["texts"]
        assert [unpack_grid(h, (24, 24)).tolist() for h in parts_b[i]["grid"]["cells"]] == \
            [unpack_grid(h, (24, 24)).tolist() for h in parts_a[i]["grid"]["cells"]]

    # and once more from the imported build: the release's own fields come back unchanged
    export_pfcvr(tmp_path / "again", tmp_path / "twice" / "T2I_VeRi_new")
    first = json.loads((tmp_path / "T2I_VeRi_new" / ANNOTATIONS).read_text())
    second = json.loads((tmp_path / "twice" / "T2I_VeRi_new" / ANNOTATIONS).read_text())
    assert second == first


def test_augmented_copies_are_made_with_the_recorded_values(annotated, tmp_path):
    summary = export_pfcvr(annotated, tmp_path / "T2I_VeRi_new", augmented_copies=True)
    manifest = json.loads((tmp_path / "T2I_VeRi_new" / MANIFEST).read_text())
    assert manifest["augmented"]["gamma"] == {"dark": 2.0, "light": 0.5} and manifest["augmented"]["noise_std"] == 20.0
    assert summary.augmented["made"] == sum(summary.records.values())
    rec = json.loads((tmp_path / "T2I_VeRi_new" / ANNOTATIONS).read_text())[0]
    root = tmp_path / "T2I_VeRi_new"
    original = np.asarray(Image.open(root / rec["file_path"]).convert("RGB"), float)
    dark = np.asarray(Image.open(root / rec["file_path"].replace("image/", "Darkimage/dark_")), float)
    light = np.asarray(Image.open(root / rec["file_path"].replace("image/", "Lightimage/light_")), float)
    noisy = np.asarray(Image.open(root / rec["file_path"].replace("image/", "Noisyimage/noisy_")), float)
    assert np.abs(dark - 255 * (original / 255) ** 2).mean() < 3  # JPEG re-encoding error only
    assert np.abs(light - 255 * (original / 255) ** 0.5).mean() < 3
    assert 8 < np.abs(noisy - original).mean() < 25  # std 20 noise, clipped at 0 and 255


def test_parquet_export_with_augmented_copies(annotated, tmp_path):
    import datasets

    result = CliRunner().invoke(cli, ["export", str(annotated), "--out", str(tmp_path / "ds"), "--augmented-copies"])
    assert result.exit_code == 0, result.output
    ds = datasets.load_dataset(str(tmp_path / "ds"))
    row = ds["test"][0]
    assert {"image_dark", "image_light", "image_noisy"} <= set(row)
    assert row["image_dark"].size == row["image"].size
    dark = np.asarray(row["image_dark"], float)
    assert np.abs(dark - 255 * (np.asarray(row["image"].convert("RGB"), float) / 255) ** 2).mean() < 3
    card = " ".join((tmp_path / "ds" / "README.md").read_text().split())
    assert "gamma 2.0 for dark and 0.5 for light" in card and "noise of std 20.0 on the 0-255 scale" in card
    assert row["mim_seed"] is None and row["prompt"] is None  # not an imported build


def test_train_images_the_loader_cannot_use_are_listed(build_dir, tmp_path):
    rows = BuildDir.open(build_dir).images(["image_id", "vehicle_id"]).to_pylist()
    train = set(BuildDir.open(build_dir).split()["train_ids"])
    no_parts = next(r["image_id"] for r in rows if r["vehicle_id"] in train)
    annotate(build_dir, skip_parts=(no_parts,))
    summary = export_pfcvr(build_dir, tmp_path / "T2I_VeRi_new")
    assert summary.skipped == [{"image_id": no_parts, "reason": "no part"}]
    manifest = json.loads((tmp_path / "T2I_VeRi_new" / MANIFEST).read_text())
    assert manifest["skipped"] == summary.skipped
    paths = {r["file_path"] for r in json.loads((tmp_path / "T2I_VeRi_new" / ANNOTATIONS).read_text())}
    assert f"image/{no_parts}.jpg" not in paths and len(paths) == len(rows) - 1


def test_refuses_to_replace_other_files_and_ids_that_int_would_merge(annotated, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["export", str(annotated), "--format", "pfcvr", "--out", str(tmp_path / "busy")])
    assert result.exit_code == 2 and "did not write (no t2iverw-export.json" in result.output
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert _json_ids(["00012", "7", "0"]) == {"00012": "00012", "7": 7, "0": 0}  # int() reads both alike
    with pytest.raises(T2IError, match="'007' and '7' are the same integer"):
        _json_ids(["007", "7"])
    with pytest.raises(T2IError, match="not made of digits"):
        _json_ids(["A12"])


def test_small_batches_write_the_one_batch_release(annotated, tmp_path, monkeypatch):
    import t2iverw.release.pfcvr as pfcvr

    export_pfcvr(annotated, tmp_path / "one" / "T2I_VeRi_new")
    monkeypatch.setattr(pfcvr, "BATCH_ROWS", 3)
    export_pfcvr(annotated, tmp_path / "many" / "T2I_VeRi_new")
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    one, many = files(tmp_path / "one"), files(tmp_path / "many")
    assert one.keys() == many.keys()
    assert all(one[k] == many[k] for k in one if k.name != "t2iverw-export.json")
