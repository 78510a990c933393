"""Per-part IoU of a dataset's part masks against ground-truth masks (`report --truth DIR`).

Truth is laid out as for `segment-eval`: `DIR/part_masks/<vid>/<imgid>.png`, bit i set
where PARTS[i] is visible. Both measures are pooled over images (sum of intersections
over sum of unions): the pixel IoU of the full-resolution masks, when the dataset has
them, and the IoU of the patch-grid cells, which an imported release (grids only) has too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from t2iverw.constants import INPUT_SIZE, MIN_COVER, PARTS
from t2iverw.errors import T2IError
from t2iverw.grid import mask_to_grid
from t2iverw.report.load import Dataset
from t2iverw.segment.evaluate import overlap
from t2iverw.synth import read_truth


def part_iou(data: Dataset, truth_root: str | Path) -> pd.DataFrame:
    """One row per part: images scored, pixel IoU (NaN without masks) and grid IoU."""
    truth_root = Path(truth_root)
    if not (truth_root / "part_masks").is_dir():
        raise T2IError(f"{truth_root} has no part_masks/ folder of ground-truth masks")
    sums = np.zeros((4, len(PARTS)))  # pixel inter, pixel union, cell inter, cell union
    scored, pixel = 0, True
    shape = data.grids.shape[2:]
    paths = data.frame["path"].to_numpy()[data.grid_rows]
    for k, (image_id, path) in enumerate(tqdm(list(zip(data.grid_ids, paths)), desc="truth", unit="img", leave=False)):
        stem = Path(path).relative_to("images").with_suffix("").as_posix() if path else None
        if not stem or not (truth_root / "part_masks" / f"{stem}.png").exists():
            continue
        truth = read_truth(truth_root, stem)
        masks = data.load_masks(image_id)
        pixel = pixel and masks is not None
        for i in range(len(PARTS)):
            if masks is not None:
                sums[:2, i] += overlap(masks[i], truth[i], image_id)
            true_cells = mask_to_grid(truth[i], shape, INPUT_SIZE, MIN_COVER)
            sums[2:, i] += overlap(data.grids[k, i], true_cells, image_id)
        scored += 1
    if not scored:
        raise T2IError(f"no segmented image of {data.root} has a truth mask under {truth_root / 'part_masks'}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "part": list(PARTS),
            "images": scored,
            "pixel IoU": sums[0] / sums[1] if pixel else np.nan,
            "grid IoU": sums[2] / sums[3],
        })
