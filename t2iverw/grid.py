"""Part masks on the ViT patch grid, and their compact storage.

PFCVR pools a part's visual feature from the patch tokens the part covers, so each
binary mask is resized to the model input (384x384) and cut into 16-pixel patches
(24x24); a cell is on when the part covers at least `min_cover` of it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from t2iverw.constants import GRID, INPUT_SIZE, MIN_COVER


def mask_to_grid(
    mask: np.ndarray,
    grid: tuple[int, int] = GRID,
    input_size: int = INPUT_SIZE,
    min_cover: float = MIN_COVER,
) -> np.ndarray:
    """Boolean (grid_h, grid_w) grid of the cells a binary mask covers by at least `min_cover`."""
    gh, gw = grid
    if input_size % gh or input_size % gw:
        raise ValueError(f"input size {input_size} is not a multiple of grid {gh}x{gw}")
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((input_size, input_size), Image.BILINEAR)
    cover = np.asarray(resized, dtype=np.float32) / 255.0
    ph, pw = input_size // gh, input_size // gw
    cell_cover = cover.reshape(gh, ph, gw, pw).mean(axis=(1, 3))
    return cell_cover >= min_cover


def pack_grid(grid: np.ndarray) -> str:
    """One part's boolean grid as a hex string of its packed bits (72 bytes for 24x24)."""
    return np.packbits(grid.astype(bool).ravel()).tobytes().hex()


def unpack_grid(hexstr: str, shape: tuple[int, int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hexstr), dtype=np.uint8))
    return bits[: shape[0] * shape[1]].reshape(shape).astype(bool)


def grid_to_mask(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A patch grid stretched over an image of `size` (width, height), nearest cell: how a part is drawn
    when only its grid exists (an imported release has no pixel masks)."""
    cells = Image.fromarray(grid.astype(np.uint8) * 255).resize(size, Image.NEAREST)
    return np.asarray(cells) > 127
