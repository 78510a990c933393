"""`t2iverw show`: one crop with its six part masks, the patch grid and its caption, as a PNG.

People judge masks by looking at them; this draws exactly what is stored (the RLE masks
and the grid cells' lines) so a wrong threshold or prompt is visible at a glance.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.constants import GRID, PARTS
from t2iverw.errors import T2IError
from t2iverw.grid import unpack_grid
from t2iverw.segment.masks import decode_rle
from t2iverw.storage import atomic_path

COLOURS = np.array(
    [(31, 119, 180), (255, 187, 0), (214, 39, 40), (44, 160, 44), (148, 103, 189), (23, 190, 207)], dtype=float
) / 255.0
ALPHA = 0.5
CAPTION_WIDTH = 80
FIG_WIDTH = 5.0  # inches; heights below are inches too
TITLE_IN, LEGEND_IN, LINE_IN = 0.3, 0.45, 0.16


def render_overlay(build: BuildDir, image_id: str, out: str | Path) -> Path:
    """Write the overlay of `image_id` to `out` (PNG) and return its path.

    Before `segment` has run (or where it failed) the image is drawn with its patch grid and
    caption and a line saying that the parts are missing: what a user checks before a GPU run.
    """
    row = _image_row(build, image_id)
    record = build.parts().get(image_id)
    image = np.asarray(Image.open(build.image_path(row["path"])).convert("RGB"), dtype=float) / 255.0
    caption = build.captions().get(image_id, {}).get("text")

    lines = textwrap.wrap(caption, CAPTION_WIDTH) if caption else []
    image_in = FIG_WIDTH * image.shape[0] / image.shape[1]
    below = LEGEND_IN + LINE_IN * len(lines) + (0.15 if lines else 0.0)
    height = TITLE_IN + image_in + below
    fig = Figure(figsize=(FIG_WIDTH, height), dpi=120)
    ax = fig.add_axes((0.0, below / height, 1.0, image_in / height))
    ax.imshow(image if record is None else blend(image, _masks(record, image.shape[:2])))
    _draw_grid(ax, image.shape[:2], GRID if record is None else record["grid"]["shape"])
    ax.set_axis_off()
    if record is None:
        fig.text(0.5, (below - 0.5 * LEGEND_IN) / height, "no part masks yet: run `t2iverw segment` on the build",
                 ha="center", va="center", fontsize=8)
    else:
        labels = [f"{p} ({s:.2f})" for p, s in zip(PARTS, record["scores"])] if record.get("scores") else list(PARTS)
        fig.legend(handles=[Patch(color=c, label=l) for c, l in zip(COLOURS, labels)], loc="upper center", ncol=3,
                   fontsize=8, frameon=False, bbox_to_anchor=(0.5, below / height))
    fig.text(0.03, (below - LEGEND_IN) / height, "\n".join(lines), va="top", fontsize=8)
    fig.text(0.5, 1 - 0.5 * TITLE_IN / height, image_id, ha="center", va="center", fontsize=9)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return Path(out)


def _masks(record: dict, size: tuple[int, int]) -> list[np.ndarray]:
    """The stored masks; an imported release has grids only, drawn as their cells stretched over the image."""
    if record.get("masks"):
        return [decode_rle(m) for m in record["masks"]]
    shape = tuple(record["grid"]["shape"])
    rows = np.arange(size[0]) * shape[0] // size[0]
    cols = np.arange(size[1]) * shape[1] // size[1]
    return [unpack_grid(cells, shape)[np.ix_(rows, cols)] for cells in record["grid"]["cells"]]


def _image_row(build: BuildDir, image_id: str) -> dict:
    for row in build.images(["image_id", "path"]).to_pylist():
        if row["image_id"] == image_id:
            return row
    raise T2IError(f"{image_id} is not in {build.images_path}")


def blend(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Each part's colour mixed into the pixels it covers (later parts on top)."""
    out = image.copy()
    for mask, colour in zip(masks, COLOURS):
        out[mask] = (1 - ALPHA) * out[mask] + ALPHA * colour
    return out


def _draw_grid(ax, size: tuple[int, int], shape: list[int]) -> None:
    h, w = size
    gh, gw = shape
    for y in np.linspace(0, h, gh + 1):
        ax.axhline(y - 0.5, color="white", linewidth=0.3, alpha=0.6)
    for x in np.linspace(0, w, gw + 1):
        ax.axvline(x - 0.5, color="white", linewidth=0.3, alpha=0.6)
