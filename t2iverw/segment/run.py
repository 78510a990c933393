"""The segment stage: a worker that turns a batch of crops into six part masks each, run by the stage runner.

The runner (t2iverw/runner) owns what is pending, the lock, the record order, the
settings fingerprint and failure isolation (an exception or an out-of-memory error on a
batch is retried on its halves, so one bad image costs one failed record); this module
owns only the model work: SAM3 over a batch, then each mask as COCO RLE plus its
patch grid. The settings that shape a part record are the checkpoint (id and revision),
the parts file (its hash and the thresholds in it) and the grid rule.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.constants import GRID, INPUT_SIZE, MIN_COVER, PARTS
from t2iverw.errors import T2IError
from t2iverw.runner import Item, ItemFailed, Mode, RunReport, Worker, run_stage
from t2iverw.segment.masks import part_record
from t2iverw.segment.prompts import PartPrompts, load_parts, parts_path


def check_grid(grid: tuple[int, int], input_size: int) -> None:
    if input_size % grid[0] or input_size % grid[1]:
        raise T2IError(f"--grid {grid[0]}x{grid[1]} does not divide the input size {input_size}")


class SegmentWorker(Worker):
    stage = "parts"
    parallel = 1  # one model: batches go through it one at a time, the next ones loading meanwhile

    def __init__(self, model: str, parts_file: str | Path | None = None, *, device: str | None = None,
                 dtype: str | None = None, batch_size: int = 4, grid: tuple[int, int] = GRID,
                 input_size: int = INPUT_SIZE, min_cover: float = MIN_COVER, segmenter=None):
        check_grid(grid, input_size)
        self.model, self.device, self.dtype = model, device, dtype
        self.parts_file = parts_path(parts_file)
        self.parts: list[PartPrompts] = load_parts(self.parts_file)  # validated before any model is loaded
        self.batch_size = batch_size
        self.rule = {"grid": grid, "input_size": input_size, "min_cover": min_cover}
        self.segmenter = segmenter  # a loaded PartSegmenter (tests, benchmarks); else loaded in setup()

    def settings(self) -> dict:
        from t2iverw.checkpoints import model_identity

        return {
            **model_identity(self.model),
            "parts_sha256": hashlib.sha256(self.parts_file.read_bytes()).hexdigest(),
            "thresholds": {p.name: p.threshold for p in self.parts},
            "grid": list(self.rule["grid"]),
            "input_size": self.rule["input_size"],
            "min_cover": self.rule["min_cover"],
        }

    def setup(self) -> None:
        if self.segmenter is None:
            from t2iverw.segment.model import load_segmenter

            self.segmenter = load_segmenter(self.model, self.parts, device=self.device, dtype=self.dtype)

    def load(self, item: Item) -> Image.Image:
        try:
            with Image.open(item.path) as img:
                return img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ItemFailed("bad_image", f"unreadable image {item.path}: {err}") from None

    def process(self, batch: list[tuple[Item, Image.Image]]) -> list[dict]:
        masks = self.segmenter.segment([image for _, image in batch])
        return [part_record(item.image_id, m, **self.rule) for (item, _), m in zip(batch, masks)]


def segment_build(
    build: BuildDir,
    worker: SegmentWorker,
    *,
    shard: tuple[int, int] | None = None,
    mode: Mode | str = Mode.CHECK,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> RunReport:
    """Segment every pending image of `shard` (all when None) into the build's parts log."""
    return run_stage(build, worker, shard=shard, mode=Mode(mode), retry_failed=retry_failed, limit=limit,
                     progress=progress)


def coverage(parts: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per part over the ok part records with masks (`BuildDir.parts()`): share of images where it was found,
    and its mean area."""
    records = [r for r in parts.values() if "instances" in r]
    if not records:
        return {}
    found = np.array([r["instances"] for r in records]) > 0
    area = np.array([r["area"] for r in records], dtype=float)
    return {
        part: {"found": float(found[:, i].mean()), "mean_area": float(area[:, i].mean())} for i, part in enumerate(PARTS)
    }
