"""Fixtures of the baseline tests: an exported synthetic dataset with captions and part grids.

Captions are built from each image's metadata (colour, type, model) and parts from the
synthetic ground-truth masks, written as ordinary caption/part records into the build
dir and exported with the real `export_dataset`: genuine data, not a mock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from t2iverw.build import BuildDir
from t2iverw.runner import open_log
from t2iverw.constants import GRID, INPUT_SIZE, MIN_COVER
from t2iverw.grid import mask_to_grid, pack_grid

SAMPLE_IDS, SAMPLE_SEED = 60, 1


def describe(row: dict, seed: int) -> str:
    """A caption naming what the synthetic drawing shows: colour, type, model and its visible extras."""
    from t2iverw.synth import make_vehicle

    v = make_vehicle(int(row["vehicle_id"]) - 1, seed)
    extras = [name for name, on in (("roof rails", v.roof_rails), ("a sunroof", v.sunroof), ("a sticker", v.sticker)) if on]
    details = f" with {' and '.join(extras)}" if extras else " with no roof rails, sunroof or sticker"
    return f"A {row['color']} {row['type']}, a {row['model']}{details}, on {v.spokes}-spoke wheels."


def write_records(build: Path, source: Path, seed: int) -> None:
    """A caption and a part record for every image of the build (from its drawing's truth and masks)."""
    from t2iverw.synth import read_truth

    bd = BuildDir.open(build)
    rows = bd.images(["image_id", "vehicle_id", "model", "type", "color"]).to_pylist()
    with open_log(bd, "captions", "main", source="truth", settings={"model": "synthetic description"}) as log:
        log.append(
            {"image_id": r["image_id"], "caption_id": r["image_id"], "status": "ok", "text": describe(r, seed)}
            for r in rows
        )
    with open_log(bd, "parts", "main", source="truth", settings={"model": "synthetic ground truth"}) as log:
        for r in rows:
            masks = read_truth(source, f"{r['vehicle_id']}/{r['image_id']}")
            rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
            log.append([{
                "image_id": r["image_id"], "status": "ok",
                "masks": [{"size": list(x["size"]), "counts": x["counts"].decode()} for x in rles],
                "scores": [1.0] * len(masks), "instances": [int(m.any()) for m in masks],
                "area": [float(m.mean()) for m in masks],
                "grid": {"shape": list(GRID), "input_size": INPUT_SIZE, "min_cover": MIN_COVER,
                         "cells": [pack_grid(mask_to_grid(m)) for m in masks]},
            }])


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny models are made of small ops: one thread is as fast, and never spins on busy shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    """An export of a 60-identity synthetic sample (42 train / 18 test identities, 2-4 images each)."""
    from t2iverw.export import export_dataset
    from t2iverw.index import build_index
    from t2iverw.split import make_split
    from t2iverw.synth import write_sample

    root = tmp_path_factory.mktemp("baseline_synth")
    write_sample(root, ids=SAMPLE_IDS, per_id=(2, 4), seed=SAMPLE_SEED)
    build = tmp_path_factory.mktemp("baseline_build")
    build_index(root, build)
    make_split(build, test_ratio=0.3, seed=0)
    write_records(build, root, SAMPLE_SEED)
    out = tmp_path_factory.mktemp("baseline_export") / "export"
    export_dataset(build, out)
    return out


@pytest.fixture(scope="session")
def tiny_clip_dir(clip_tokenizer_dir, tmp_path_factory):
    """A random CLIPModel of the tiny config (at 32 px, so loading at 64 px must interpolate) plus the tokenizer."""
    import torch
    import yaml
    from transformers import CLIPConfig, CLIPModel

    from t2iverw.training.config import TINY_CONFIG

    kwargs = yaml.safe_load(TINY_CONFIG.read_text())["random_clip"]
    kwargs["vision_config"] = {**kwargs["vision_config"], "image_size": 32}
    out = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(**kwargs)).save_pretrained(out)
    for f in clip_tokenizer_dir.iterdir():
        shutil.copy(f, out)
    return out
