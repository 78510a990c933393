"""The segment stage over a build: pending images of this shard -> SAM3 -> append-only `parts` log.

Resumable like the caption stage: every batch's records are appended (fsynced) as soon
as they exist, and a rerun skips images whose latest record is `ok`, so a kill loses at
most the batch in flight and never duplicates work. Images that cannot be read get a
`failed` record with the reason and are retried on the next run.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from t2iverw.build import BuildDir
from t2iverw.constants import GRID, INPUT_SIZE, MIN_COVER, PARTS
from t2iverw.errors import T2IError
from t2iverw.segment.masks import failed_record, part_record
from t2iverw.segment.model import PartSegmenter

SHARD_KEY = b"t2iverw-segment-shard"
PREFETCH_BATCHES = 2
LOADER_THREADS = 4


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/N' -> (i, N) with 0 <= i < N."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise T2IError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise T2IError(f"--shard {text}: need 0 <= i < N")
    return i, n


def check_grid(grid: tuple[int, int], input_size: int) -> None:
    if input_size % grid[0] or input_size % grid[1]:
        raise T2IError(f"--grid {grid[0]}x{grid[1]} does not divide the input size {input_size}")


def shard_of(image_id: str, n_shards: int) -> int:
    """Stable shard of an image: a keyed hash of its id, so no ordering or coordination matters."""
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=8, key=SHARD_KEY).digest()
    return int.from_bytes(digest, "big") % n_shards


def pending_images(build: BuildDir, shard: tuple[int, int] | None = None, limit: int | None = None) -> list[dict]:
    """Rows (image_id, path) of this shard whose latest part record is not `ok`, in index order."""
    done = build.parts()
    rows = build.images(["image_id", "path"]).to_pylist()
    rows = [r for r in rows if r["image_id"] not in done and (shard is None or shard_of(r["image_id"], shard[1]) == shard[0])]
    return rows[:limit] if limit is not None else rows


@dataclass
class SegmentReport:
    segmented: int = 0
    failed: list[dict] = field(default_factory=list)
    coverage: dict[str, dict[str, float]] = field(default_factory=dict)


def segment_build(
    build: BuildDir,
    segmenter: PartSegmenter,
    *,
    batch_size: int = 4,
    grid: tuple[int, int] = GRID,
    input_size: int = INPUT_SIZE,
    min_cover: float = MIN_COVER,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> SegmentReport:
    """Segment every pending image of `shard` (all when None) and append its record to the parts log."""
    check_grid(grid, input_size)
    rows = pending_images(build, shard, limit)
    report = SegmentReport()
    with build.log_writer("parts", shard=shard) as log, tqdm(
        total=len(rows), unit="img", desc="segment", disable=not progress
    ) as bar:
        for batch in _loaded_batches(build, rows, batch_size):
            records = batch_records(segmenter, batch, grid=grid, input_size=input_size, min_cover=min_cover)
            log.write_many(records)
            report.segmented += sum(r["status"] == "ok" for r in records)
            report.failed += [r for r in records if r["status"] == "failed"]
            bar.update(len(batch))
    report.coverage = coverage(build)
    return report


def batch_records(
    segmenter: PartSegmenter,
    batch: list[tuple[dict, Image.Image | str]],
    *,
    grid: tuple[int, int] = GRID,
    input_size: int = INPUT_SIZE,
    min_cover: float = MIN_COVER,
) -> list[dict]:
    """Records of a batch of (row, image or the reason it could not be read), in batch order."""
    ok = [(row, img) for row, img in batch if isinstance(img, Image.Image)]
    masks = iter(segmenter.segment([img for _, img in ok]) if ok else [])
    return [
        part_record(row["image_id"], next(masks), grid=grid, input_size=input_size, min_cover=min_cover)
        if isinstance(img, Image.Image)
        else failed_record(row["image_id"], img)
        for row, img in batch
    ]


def _loaded_batches(build: BuildDir, rows: list[dict], batch_size: int) -> Iterator[list[tuple[dict, Image.Image | str]]]:
    """Batches of (row, image or failure reason), decoded by threads a couple of batches ahead of the model."""
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    load: Callable[[dict], Image.Image | str] = lambda row: load_image(build.image_path(row["path"]))
    with ThreadPoolExecutor(LOADER_THREADS) as pool:
        queue: deque = deque()
        for chunk in chunks:
            queue.append((chunk, [pool.submit(load, row) for row in chunk]))
            if len(queue) > PREFETCH_BATCHES:
                yield _resolved(*queue.popleft())
        while queue:
            yield _resolved(*queue.popleft())


def _resolved(chunk: list[dict], futures: list) -> list[tuple[dict, Image.Image | str]]:
    return [(row, fut.result()) for row, fut in zip(chunk, futures)]


def load_image(path: Path) -> Image.Image | str:
    """The decoded RGB image, or why it could not be read."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return f"unreadable image {path}: {err}"


def coverage(build: BuildDir) -> dict[str, dict[str, float]]:
    """Per part over all ok records: share of images where it was found, and its mean area (fraction of image)."""
    records = list(build.parts().values())
    if not records:
        return {}
    found = np.array([r["instances"] for r in records]) > 0
    area = np.array([r["area"] for r in records], dtype=float)
    return {
        part: {"found": float(found[:, i].mean()), "mean_area": float(area[:, i].mean())} for i, part in enumerate(PARTS)
    }
