"""The report's PNG figures, drawn with matplotlib's object API (no pyplot state, any backend).

Each function draws one figure into `out` atomically and returns its file name. The
per-part heat maps are also written as bare 24x24 images with a fixed 0..1 colour scale
(magma, whose lightness rises with the value), so a heat map can be read back by pixel.
"""

from __future__ import annotations

import random
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from t2iverw.constants import PARTS
from t2iverw.report.load import Dataset
from t2iverw.report.stats import CaptionStats, PartStats
from t2iverw.grid import grid_to_mask
from t2iverw.segment.show import COLOURS, blend
from t2iverw.storage import atomic_path

HEAT_CMAP = "magma"
DPI = 100


def _save(fig: Figure, out: Path, name: str) -> str:
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return name


def identities_histogram(per_identity: pd.Series, out: Path) -> str:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    if len(per_identity):
        lo, hi = int(per_identity.min()), int(per_identity.max())
        ax.hist(per_identity, bins=np.arange(lo, hi + 2) - 0.5, color="#4c72b0", edgecolor="white")
    ax.set_xlabel("images per identity")
    ax.set_ylabel("identities")
    ax.set_title("Images per identity")
    return _save(fig, out, "images_per_identity.png")


def caption_lengths(stats: CaptionStats, out: Path) -> str:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    if len(stats.lengths):
        ax.hist(stats.lengths, bins=min(40, max(5, len(np.unique(stats.lengths)))), color="#4c72b0", edgecolor="white")
        ax.axvline(stats.mean_words, color="#222222", linestyle="-", label=f"mean {stats.mean_words:.2f}")
    ax.axvline(stats.paper_mean, color="#c44e52", linestyle="--", label=f"paper {stats.paper_mean}")
    ax.set_xlabel("words per caption")
    ax.set_ylabel("captions")
    ax.set_title("Caption length")
    ax.legend(frameon=False)
    return _save(fig, out, "caption_length.png")


def bar_chart(labels: list[str], values: list[float], title: str, xlabel: str, out: Path, name: str,
              share: bool = False) -> str:
    fig = Figure(figsize=(6, 0.6 + 0.32 * max(1, len(labels))))
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    ax.barh(y, values, color="#4c72b0")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    if share:
        ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    if not labels:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, out, name)


def parts_chart(stats: PartStats, out: Path) -> str:
    table = stats.table
    cols = [c for c in ("present (grid)", "present (mask)", "mean grid area", "mean mask area") if c in table]
    fig = Figure(figsize=(9, 3.2))
    for k, group in enumerate((["present (grid)", "present (mask)"], ["mean grid area", "mean mask area"])):
        ax = fig.add_subplot(1, 2, k + 1)
        shown = [c for c in group if c in cols]
        width = 0.8 / max(1, len(shown))
        x = np.arange(len(PARTS))
        for j, col in enumerate(shown):
            ax.bar(x + (j - (len(shown) - 1) / 2) * width, table[col].fillna(0), width, label=col)
        ax.set_xticks(x, PARTS, rotation=30)
        ax.set_title("Presence rate" if k == 0 else "Mean area (share of image)")
        ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    return _save(fig, out, "parts.png")


def heatmaps(stats: PartStats, out: Path) -> list[str]:
    """One labelled figure of the six heat maps, plus a bare image per part (`heatmap-<part>.png`)."""
    names = []
    for part, heat in zip(PARTS, stats.heatmaps):
        name = f"heatmap-{part}.png"
        with atomic_path(out / name) as tmp:
            matplotlib.image.imsave(tmp, heat, cmap=HEAT_CMAP, vmin=0.0, vmax=1.0, format="png")
        names.append(name)
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(2, 3)
    for ax, part, heat in zip(axes.ravel(), PARTS, stats.heatmaps):
        shown = ax.imshow(heat, cmap=HEAT_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(part)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes.ravel().tolist(), label="share of segmented images")
    fig.suptitle(f"Where each part sits on the {stats.heatmaps.shape[1]}x{stats.heatmaps.shape[2]} patch grid")
    return [_save(fig, out, "heatmaps.png"), *names]


def iou_chart(table: pd.DataFrame, out: Path) -> str:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    x = np.arange(len(table))
    for j, col in enumerate(("pixel IoU", "grid IoU")):
        ax.bar(x + (j - 0.5) * 0.4, table[col].fillna(0), 0.4, label=col)
    ax.set_xticks(x, table["part"], rotation=30)
    ax.set_ylim(0, 1)
    ax.set_title("IoU against truth")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    return _save(fig, out, "iou.png")


def gallery(data: Dataset, out: Path, count: int, seed: int) -> str | None:
    """Random segmented images with their six parts blended in; None when no image can be read."""
    ids = data.grid_ids
    chosen = sorted(random.Random(seed).sample(range(len(ids)), min(count, len(ids))))
    images = data.load_images([ids[k] for k in chosen])
    panels = []
    for k in chosen:
        if ids[k] not in images:
            return None
        image = images[ids[k]]
        masks = data.load_masks(ids[k]) or [grid_to_mask(g, image.size) for g in data.grids[k]]
        panels.append((ids[k], blend(np.asarray(image, dtype=float) / 255.0, masks)))
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(3 * cols, 2.3 * rows + 0.5))
    for i, (image_id, pixels) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(pixels)
        ax.set_title(image_id, fontsize=9)
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=c, label=p) for c, p in zip(COLOURS, PARTS)], loc="lower center",
               ncol=len(PARTS), frameon=False, fontsize=8)
    return _save(fig, out, "gallery.png")


