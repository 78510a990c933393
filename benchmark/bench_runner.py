"""The stage runner's overhead per record, at 100k records, against writing the records alone.

A worker that does no model work returns one caption-sized record body per image, so
what is timed is the runner itself: reading the index and the logs to decide what is
pending, the lock, the thread hand-offs, stamping provenance and order, and the fsynced
group commits. The baseline writes the same bodies as JSON lines to a file with one
fsync per batch of the same size, the least any crash-safe writer does. A third timing is
a rerun that finds nothing to do (reading 100k records back to decide that).

    python benchmark/bench_runner.py [--records 100000] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from t2iverw.build import BuildDir
from t2iverw.runner import Worker, run_stage

TEXT = ("A white sedan with a chrome grille, slim swept-back headlights, five-spoke alloy wheels, a black roof "
        "rail on each side, tinted rear windows and a small sticker on the lower left of the windshield.")


class NoModel(Worker):
    stage = "captions"

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def settings(self) -> dict:
        return {"backend": "none", "model": "bench", "sampling": {"max_tokens": 256, "temperature": 0.7, "seed": 0}}

    def process(self, batch):
        return [body(item.image_id) for item, _ in batch]


def body(image_id: str) -> dict:
    return {"image_id": image_id, "caption_id": image_id, "status": "ok", "text": TEXT, "endpoint": "http://x/v1",
            "seed": 0, "usage": {"prompt_tokens": 420, "completion_tokens": 55}, "latency_s": 1.234,
            "finish_reason": "stop", "attempts": 1, "qa": []}


def make_build(root: Path, n: int) -> BuildDir:
    ids = [f"{i:07d}" for i in range(n)]
    table = pa.table({
        "image_id": ids, "vehicle_id": [f"{i // 8:05d}" for i in range(n)],
        **{c: [None] * n for c in ("camera_id", "time", "model", "type", "color")},
        "path": [f"images/{i // 8:05d}/{i:07d}.jpg" for i in range(n)],
        "width": pa.array([200] * n, pa.int32()), "height": pa.array([150] * n, pa.int32()),
        "sha256": [hashlib.sha256(i.encode()).hexdigest() for i in ids],
    })
    pq.write_table(table, root / "images.parquet")
    (root / "src").mkdir()
    (root / "build.json").write_text(json.dumps({"source_root": str(root / "src")}))
    return BuildDir.open(root)


def write_alone(path: Path, ids: list[str], batch: int) -> float:
    start = time.perf_counter()
    with path.open("ab") as fh:
        for i in range(0, len(ids), batch):
            fh.write("".join(json.dumps(body(x)) + "\n" for x in ids[i : i + batch]).encode())
            fh.flush()
            os.fsync(fh.fileno())
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        build = make_build(Path(tmp), n)
        ids = build.images(["image_id"]).column("image_id").to_pylist()
        alone = write_alone(Path(tmp) / "alone.jsonl", ids, args.batch_size)

        start = time.perf_counter()
        report = run_stage(build, NoModel(args.batch_size), progress=False)
        runner = time.perf_counter() - start
        assert report.ok == n

        start = time.perf_counter()
        rerun = run_stage(build, NoModel(args.batch_size), progress=False)
        resume = time.perf_counter() - start
        assert rerun.pending == 0
        size = (build.root / "captions" / "main.jsonl").stat().st_size / n

    print(f"{n} records of {size:.0f} bytes, batches of {args.batch_size}, one fsync per batch ({os.cpu_count()} CPUs)")
    print(f"  writing the records alone   {alone:7.2f} s  {1e6 * alone / n:7.1f} us/record")
    print(f"  through the stage runner    {runner:7.2f} s  {1e6 * runner / n:7.1f} us/record")
    print(f"  runner overhead             {runner - alone:7.2f} s  {1e6 * (runner - alone) / n:7.1f} us/record "
          f"(x{runner / alone:.2f} the bare writes)")
    print(f"  rerun with nothing pending  {resume:7.2f} s  {1e6 * resume / n:7.1f} us/record read back")


if __name__ == "__main__":
    main()
