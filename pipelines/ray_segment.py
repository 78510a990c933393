"""`t2iverw segment` past one machine: Ray Data over a Ray cluster, one SAM3 per GPU actor.

The driver lists the pending images of the build (the same rule as the CLI, so a rerun
resumes), Ray Data streams them through a pool of actors that each load the model once
and return finished records, and the driver appends every batch to the build's parts
log as it arrives: a killed job loses at most the batches in flight. Workers read the
images themselves, so every node must see the build's source root at the same path
(a shared filesystem), and the build directory must be writable by the driver.

    pip install -e '.[ray]'
    python pipelines/ray_segment.py BUILD --actors 8                 # 8 GPUs anywhere in the cluster
    python pipelines/ray_segment.py BUILD --actors 2 --gpus-per-actor 0 --device cpu   # CPU smoke test

For a few GPUs without Ray, `t2iverw segment BUILD --shard i/N` per GPU does the same.
"""

from __future__ import annotations

import argparse
import json

import ray
from tqdm import tqdm

from t2iverw.build import BuildDir
from t2iverw.constants import GRID, INPUT_SIZE, MIN_COVER
from t2iverw.segment.run import batch_records, coverage, load_image, pending_images


class SegmentActor:
    """Loads SAM3 once; turns a batch of (image_id, path) rows into JSON part records."""

    def __init__(self, build: str, model: str, parts: str | None, device: str | None, dtype: str | None,
                 grid: tuple[int, int], input_size: int, min_cover: float):
        from t2iverw.segment.model import load_segmenter
        from t2iverw.segment.prompts import load_parts

        self.build = BuildDir.open(build)
        self.segmenter = load_segmenter(model, load_parts(parts), device=device, dtype=dtype)
        self.rule = {"grid": grid, "input_size": input_size, "min_cover": min_cover}

    def __call__(self, batch: dict) -> dict:
        rows = [{"image_id": i, "path": p} for i, p in zip(batch["image_id"], batch["path"])]
        loaded = [(row, load_image(self.build.image_path(row["path"]))) for row in rows]
        return {"record": [json.dumps(r) for r in batch_records(self.segmenter, loaded, **self.rule)]}


def run(args: argparse.Namespace) -> None:
    build = BuildDir.open(args.build)
    rows = pending_images(build, limit=args.limit)
    if not rows:
        print("nothing pending")
        return
    ray.init(address=args.address)
    grid = tuple(int(x) for x in args.grid.lower().split("x"))
    records = ray.data.from_items(rows).map_batches(
        SegmentActor,
        fn_constructor_kwargs=dict(build=str(build.root), model=args.model, parts=args.parts, device=args.device,
                                   dtype=args.dtype, grid=grid, input_size=args.input_size, min_cover=args.min_cover),
        batch_size=args.batch_size,
        num_gpus=args.gpus_per_actor,
        compute=ray.data.ActorPoolStrategy(size=args.actors),
    )
    with build.log_writer("parts") as log, tqdm(total=len(rows), unit="img", desc="segment") as bar:
        for batch in records.iter_batches(batch_size=args.batch_size, batch_format="numpy"):
            log.write_many(json.loads(r) for r in batch["record"])
            bar.update(len(batch["record"]))
    for part, row in coverage(build).items():
        print(f"{part:<8} found {row['found']:.1%}  mean area {row['mean_area']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--model", default="facebook/sam3")
    ap.add_argument("--parts", help="prompt file (default: shipped parts.yaml)")
    ap.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local cluster)")
    ap.add_argument("--actors", type=int, default=1, help="model replicas, one per GPU")
    ap.add_argument("--gpus-per-actor", type=float, default=1.0)
    ap.add_argument("--device", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", choices=["bf16", "fp32"])
    ap.add_argument("--batch-size", type=int, default=8, help="images per forward")
    ap.add_argument("--grid", default=f"{GRID[0]}x{GRID[1]}")
    ap.add_argument("--input-size", type=int, default=INPUT_SIZE)
    ap.add_argument("--min-cover", type=float, default=MIN_COVER)
    ap.add_argument("--limit", type=int, help="segment at most this many pending images")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
