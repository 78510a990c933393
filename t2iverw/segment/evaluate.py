"""Scoring stored part masks against ground-truth masks (`t2iverw segment-eval`).

Ground truth is `TRUTH/part_masks/<vid>/<imgid>.png` with bit i set where PARTS[i] is
visible (the synthetic sample ships it; hand-labelled real crops use the same layout).
IoU is pooled over images (sum of intersections / sum of unions), so a part absent from
both prediction and truth neither helps nor hurts; grid precision/recall compare the
stored cells with the truth put through the same grid rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2iverw.build import BuildDir
from t2iverw.constants import PARTS
from t2iverw.errors import T2IError
from t2iverw.grid import mask_to_grid, unpack_grid
from t2iverw.segment.masks import decode_rle
from t2iverw.synth import read_truth


def evaluate_parts(build: BuildDir, truth_root: str | Path) -> dict:
    """{'images': n, 'parts': {part: {'iou', 'grid_precision', 'grid_recall'}}} over images with truth."""
    truth_root = Path(truth_root)
    if not (truth_root / "part_masks").is_dir():
        raise T2IError(f"{truth_root} has no part_masks/ folder of ground-truth masks")
    paths = dict(zip(*build.images(["image_id", "path"]).to_pydict().values()))
    sums = np.zeros((5, len(PARTS)))  # intersection, union, cell tp, predicted cells, true cells
    n = 0
    for image_id, rec in build.parts().items():
        stem = str(Path(paths[image_id]).relative_to("images").with_suffix(""))
        if not (truth_root / "part_masks" / f"{stem}.png").exists():
            continue
        sums += _counts(rec, read_truth(truth_root, stem))
        n += 1
    if n == 0:
        raise T2IError(f"no segmented image of {build.root} has a truth mask under {truth_root / 'part_masks'}")
    inter, union, tp, pred, true = sums
    return {
        "images": n,
        "parts": {
            part: {
                "iou": _ratio(inter[i], union[i]),
                "grid_precision": _ratio(tp[i], pred[i]),
                "grid_recall": _ratio(tp[i], true[i]),
            }
            for i, part in enumerate(PARTS)
        },
    }


def overlap(pred: np.ndarray, truth: np.ndarray, what: str) -> tuple[int, int]:
    """(intersection, union) of two binary masks: summed over images, they give the pooled IoU that
    `segment-eval` and `report --truth` both report (the one place it is computed)."""
    if pred.shape != truth.shape:
        raise T2IError(f"{what}: stored mask is {pred.shape}, truth is {truth.shape}")
    return int(np.logical_and(pred, truth).sum()), int(np.logical_or(pred, truth).sum())


def _counts(rec: dict, truth: np.ndarray) -> np.ndarray:
    g = rec["grid"]
    shape = tuple(g["shape"])
    out = np.zeros((5, len(PARTS)))
    for i, (rle, cells) in enumerate(zip(rec["masks"], g["cells"])):
        pred_cells = unpack_grid(cells, shape)
        true_cells = mask_to_grid(truth[i], shape, g["input_size"], g["min_cover"])
        out[:, i] = [
            *overlap(decode_rle(rle), truth[i], rec["image_id"]),
            (pred_cells & true_cells).sum(),
            pred_cells.sum(),
            true_cells.sum(),
        ]
    return out


def _ratio(num: float, den: float) -> float:
    """num/den, NaN when there is nothing to measure (e.g. a part in no truth mask)."""
    return float(num / den) if den else float("nan")
