"""Reviewing an imported release: several captions per image, part grids without pixel masks."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.constants import PARTS
from t2iverw.export import caption_source
from t2iverw.grid import mask_to_grid, pack_grid
from t2iverw.runner import open_log
from t2iverw.synth import read_truth

TEXTS = ["A white car with a flat roof.", "The second caption of the same image."]


def test_release_captions_and_grid_overlays(build_dir, start_app, raw_http):
    bd = BuildDir.open(build_dir)
    rows = bd.images().to_pylist()
    grids = {r["image_id"]: [mask_to_grid(m) for m in read_truth(bd.source_root, f"{r['vehicle_id']}/{r['image_id']}")]
             for r in rows}
    with open_log(bd, "captions", "import", source="release", settings={"release": "synthetic"}) as log:
        log.append([{"image_id": r["image_id"], "status": "ok", "text": TEXTS[0], "texts": TEXTS} for r in rows])
    with open_log(bd, "parts", "import", source="release", settings={"release": "synthetic"}) as log:
        log.append([{"image_id": i, "status": "ok", "grid": {"shape": [24, 24], "cells": [pack_grid(g) for g in gs]}}
                    for i, gs in grids.items()])
    app = start_app(build_dir, "--reviewer", "hal")
    image_id = rows[0]["image_id"]

    item = json.loads(raw_http(app.base, "GET", f"/api/items/{image_id}")[1])
    assert item["text"] == TEXTS[0] and item["provenance"]["source"] == "release"
    assert [p["name"] for p in item["parts"]] == list(PARTS)
    # a part layer is drawn from the grid: its coloured pixels are the grid's cells stretched over the image
    wheels = PARTS.index("wheels")
    status, png, _ = raw_http(app.base, "GET", f"/api/images/{image_id}/parts/{wheels}.png")
    assert status == 200
    alpha = np.asarray(Image.open(io.BytesIO(png)))[..., 3] > 0
    assert alpha.shape == (rows[0]["height"], rows[0]["width"])
    cells = np.asarray(Image.fromarray(grids[image_id][wheels]).resize(alpha.shape[::-1], Image.NEAREST))
    assert alpha.any() and np.array_equal(alpha, cells)

    status, body, _ = raw_http(app.base, "POST", "/api/decisions",
                               {"image_id": image_id, "action": "save", "text": "A white SUV with a flat roof."},
                               headers={"X-T2IVERW": "1"})
    assert status == 200, body
    record = BuildDir.open(build_dir).latest("captions")[image_id]
    # the review replaces the first caption and keeps the release's others
    assert record["texts"] == ["A white SUV with a flat roof.", TEXTS[1]]
    assert record["edited_from"] == TEXTS[0] and caption_source(record) == "human-edited"
