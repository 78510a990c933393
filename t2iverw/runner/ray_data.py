"""The Ray Data distributor: a stage's worker on a pool of Ray actors, anywhere in a cluster.

The driver does what the in-process distributor does (takes the log's lock, asks the
worker its settings, reads what is pending, writes every record), so resuming, locking,
ordering and provenance are the same code. Ray Data streams the pending items through a
pool of actors; each builds its own worker once (one model per GPU, or one endpoint pool),
checks that its settings equal the driver's (a node with another model or parts file
would otherwise write records that lie), and returns record bodies, which the driver
appends as they arrive: a killed job loses at most the blocks in flight.

Workers read the images themselves, so every node must see the source root at the path
the driver resolves (a shared filesystem; `--source-root` on the driver sets it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from t2iverw.build import BuildDir
from t2iverw.runner.distributor import RunReport, new_run, plan, process_items
from t2iverw.runner.reader import Item
from t2iverw.runner.settings import Mode, differences
from t2iverw.runner.worker import Worker, call


class _Actor:
    """Holds one worker (its model or client) for the life of a Ray actor."""

    def __init__(self, make_worker: Callable[[], Worker], settings: dict):
        self.loop = asyncio.new_event_loop()  # one loop for the actor: async clients stay bound to it
        self.worker = make_worker()
        self.loop.run_until_complete(call(self.worker.open))
        mine = self.worker.settings()
        if mine != settings:
            raise RuntimeError(f"this node's worker has other settings than the driver's: "
                               f"{'; '.join(differences(settings, mine))}")
        self.loop.run_until_complete(call(self.worker.setup))

    def __call__(self, batch: dict) -> dict:
        items = [Item(i, Path(p), json.loads(r)) for i, p, r in zip(batch["image_id"], batch["path"], batch["row"])]
        bodies = self.loop.run_until_complete(process_items(self.worker, items))
        return {"body": [json.dumps(b, ensure_ascii=False) for b in bodies]}


async def _settings(worker: Worker) -> dict:
    """The worker's settings, from one open/close in one event loop (an async client is bound to its loop)."""
    try:
        await call(worker.open)
        return worker.settings()
    finally:
        await call(worker.close)


def run_on_ray(
    build: BuildDir,
    make_worker: Callable[[], Worker],
    *,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    shard: tuple[int, int] | None = None,
    mode: Mode = Mode.CHECK,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> RunReport:
    """Process the pending images of `shard` with `actors` copies of `make_worker()`; `ray.init` is the caller's."""
    import ray

    driver = make_worker()  # for its settings only: no weights are loaded here
    writer, report = new_run(build, driver, shard)
    with writer.open():
        todo = plan(build, driver, writer, report, asyncio.run(_settings(driver)), shard=shard, mode=mode,
                    retry_failed=retry_failed, limit=limit)
        if not todo:
            return report
        block = max(1, driver.batch_size) * max(1, driver.parallel)
        items = ray.data.from_items([{"image_id": i.image_id, "path": str(i.path), "row": json.dumps(i.row)}
                                     for i in todo])
        results = items.map_batches(
            _Actor, fn_constructor_kwargs={"make_worker": make_worker, "settings": report.settings},
            batch_size=block, num_gpus=gpus_per_actor, compute=ray.data.ActorPoolStrategy(size=actors),
        )
        start = time.perf_counter()
        with tqdm(total=len(todo), unit="img", desc=driver.stage, disable=not progress) as bar:
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                records = writer.append(json.loads(b) for b in batch["body"])
                report.count(records)
                bar.update(len(records))
        report.seconds = time.perf_counter() - start
    return report
