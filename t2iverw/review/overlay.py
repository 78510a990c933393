"""One part's mask as a transparent PNG layer in its `show` colour, for the page to stack over the photo.

Six separate layers let the reviewer toggle each part in the browser without a round
trip. A record without pixel masks (an imported release) has only the patch grid, which
is stretched over the image.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from t2iverw.grid import grid_to_mask, unpack_grid
from t2iverw.segment.masks import decode_rle
from t2iverw.segment.show import ALPHA, COLOURS


def part_mask(record: dict, part: int, size: tuple[int, int]) -> np.ndarray:
    """Bool (H, W) mask of part `part` of a part record, for an image of `size` (width, height)."""
    if record.get("masks"):
        return decode_rle(record["masks"][part])
    return grid_to_mask(unpack_grid(record["grid"]["cells"][part], tuple(record["grid"]["shape"])), size)


def layer_png(mask: np.ndarray, part: int) -> bytes:
    """RGBA PNG: the part's colour at ALPHA where the mask is on, transparent elsewhere."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (*np.round(COLOURS[part] * 255).astype(np.uint8), round(ALPHA * 255))
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()
