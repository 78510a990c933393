"""`t2iverw segment` across a Ray cluster: one SAM3 per GPU actor, the same runner as the CLI.

The driver takes the log's lock, reads what is pending (so a rerun resumes, and a run with
other settings is refused unless --redo or --keep), and appends every record as it
arrives; Ray Data streams the images through a pool of actors that each load the model
once. Every node must see the build's source root at the same path (a shared
filesystem); the build directory must be writable by the driver.

    pip install -e '.[ray]'
    python pipelines/ray_segment.py BUILD --actors 8                  # 8 GPUs anywhere in the cluster
    python pipelines/ray_segment.py BUILD --actors 1 --gpus-per-actor 0 --device cpu --num-cpus 2   # CPU smoke test

For a few GPUs without Ray, `t2iverw segment BUILD --shard i/N` per GPU does the same.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from t2iverw.options import runner_options
from t2iverw.pipeline import ray_options, run_pipeline
from t2iverw.segment.cli import segment_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("build", type=click.Path(exists=True, file_okay=False, path_type=Path))
@segment_options(batch_size=8)
@ray_options
@runner_options
def main(model: str, parts_file, device, dtype, batch_size: int, grid: tuple[int, int], input_size: int,
         min_cover: float, **run) -> None:
    """Segment every pending image of BUILD on a Ray cluster."""
    from t2iverw.segment.run import SegmentWorker

    make = functools.partial(SegmentWorker, model, parts_file, device=device, dtype=dtype, batch_size=batch_size,
                             grid=grid, input_size=input_size, min_cover=min_cover)
    run_pipeline(make, "segmented", **run)


if __name__ == "__main__":
    main()
