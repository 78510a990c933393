"""Part masks to the stored record: COCO RLE at the original size plus the patch-grid cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as coco_mask

from t2iverw.grid import mask_to_grid, pack_grid

if TYPE_CHECKING:  # the model module imports torch, which readers of masks (review, report) need not load
    from t2iverw.segment.model import PartMasks


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a bool (H, W) mask, with `counts` as str so it is JSON-safe."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def part_record(
    image_id: str, parts: PartMasks, *, grid: tuple[int, int], input_size: int, min_cover: float
) -> dict:
    """The `parts` record of one image (see annotations/schema.md); the grid rule travels with the cells."""
    return {
        "image_id": image_id,
        "status": "ok",
        "masks": [encode_rle(m) for m in parts.masks],
        "scores": [round(s, 4) for s in parts.scores],
        "instances": parts.instances,
        "area": [round(float(m.mean()), 5) for m in parts.masks],
        "grid": {
            "shape": list(grid),
            "input_size": input_size,
            "min_cover": min_cover,
            "cells": [pack_grid(mask_to_grid(m, grid, input_size, min_cover)) for m in parts.masks],
        },
    }
