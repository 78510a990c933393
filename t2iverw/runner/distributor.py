"""The in-process distributor: one process over the whole build or over `--shard i/N`.

Order of a run: take the log's lock first (a second process on the same shard is refused
before any server or model is touched), ask the worker its settings, read what is
pending, load the model only if something is, then stream: threads load items a few
batches ahead (a batch per thread hand-off), `parallel` batches are processed at once (an async worker's requests in
flight, or one GPU batch at a time), and a writer task commits every result that has
finished in one fsynced append (a group commit), so neither the model nor the network
waits on the disk. Sharded runs across machines and the Ray pipelines use the same
reader, worker isolation and writer; only this scheduling differs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from t2iverw.build import BuildDir
from t2iverw.runner.reader import Item, Pending, pending
from t2iverw.runner.records import shard_log
from t2iverw.runner.settings import Mode
from t2iverw.runner.worker import Worker, call, load_batch, process_isolated
from t2iverw.runner.writer import LogWriter

PREFETCH_BATCHES = 2
EXAMPLES = 5


@dataclass
class RunReport:
    stage: str
    log: str
    settings: dict = field(default_factory=dict)
    pending: int = 0
    why: Counter = field(default_factory=Counter)  # reader's reasons: new, failed, other settings, done, ...
    ok: int = 0
    failed: Counter = field(default_factory=Counter)  # reason -> records
    examples: list[dict] = field(default_factory=list)  # the first failed records
    seconds: float = 0.0

    def count(self, records: list[dict]) -> None:
        for rec in records:
            if rec["status"] == "ok":
                self.ok += 1
            else:
                self.failed[rec.get("reason", rec["status"])] += 1
                if len(self.examples) < EXAMPLES:
                    self.examples.append(rec)

    def lines(self, verb: str) -> list[str]:
        if not self.pending:
            return [f"nothing to do: no image of this {'shard' if self.log != 'main' else 'build'} is pending "
                    f"({_why(self.why)}); --retry-failed retries failures, --redo redoes other settings"]
        rate = self.pending / self.seconds if self.seconds else 0.0
        out = [f"{verb} {self.ok} of {self.pending} pending images in {self.seconds:.1f}s ({rate:.2f} img/s) "
               f"into {self.stage}/{self.log}.jsonl"]
        out += [f"  failed ({reason}): {n}" for reason, n in sorted(self.failed.items())]
        out += [f"  e.g. {r['image_id']}: {r.get('detail') or r.get('reason')}" for r in self.examples[:3]]
        return out


def _why(counts: Counter) -> str:
    return ", ".join(f"{n} {why.split(': ', 1)[-1]}" for why, n in counts.most_common())


def run_stage(
    build: BuildDir,
    worker: Worker,
    *,
    shard: tuple[int, int] | None = None,
    mode: Mode = Mode.CHECK,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> RunReport:
    """Process every pending image of `shard` (all when None) with `worker`, appending to its log."""
    return asyncio.run(_run(build, worker, shard, Mode(mode), retry_failed, limit, progress))


def new_run(build: BuildDir, worker: Worker, shard: tuple[int, int] | None) -> tuple[LogWriter, RunReport]:
    """The writer of this shard's log (not yet open: the distributor takes its lock first) and the run's report."""
    log = shard_log(shard)
    return LogWriter(build, worker.stage, log, source=worker.source, settings={}, floor=0), RunReport(worker.stage, log)


def plan(build: BuildDir, worker: Worker, writer: LogWriter, report: RunReport, settings: dict, *,
         shard: tuple[int, int] | None, mode: Mode, retry_failed: bool, limit: int | None) -> list[Item]:
    """What this run processes; the writer and the report learn the settings and what the reader found."""
    todo: Pending = pending(build, worker.stage, settings, shard=shard, mode=Mode(mode), retry_failed=retry_failed,
                            limit=limit, columns=getattr(worker, "columns", ()))
    writer.configure(settings, todo.floor)
    report.settings, report.pending, report.why = settings, len(todo.items), todo.counts
    return todo.items


async def _run(build: BuildDir, worker: Worker, shard, mode: Mode, retry_failed: bool, limit, progress: bool) -> RunReport:
    writer, report = new_run(build, worker, shard)
    with writer.open():
        try:
            await call(worker.open)
            items = await asyncio.to_thread(plan, build, worker, writer, report, worker.settings(), shard=shard,
                                            mode=mode, retry_failed=retry_failed, limit=limit)
            if items:
                await call(worker.setup)
                start = time.perf_counter()
                try:
                    await drive(worker, items, writer, report, progress)
                finally:
                    report.seconds = time.perf_counter() - start
        finally:
            await call(worker.close)
    return report


async def drive(worker: Worker, items: list[Item], writer: LogWriter, report: RunReport, progress: bool) -> None:
    """Load -> process -> group-commit every item; on a fatal error, commit what finished, then re-raise."""
    size, parallel = max(1, worker.batch_size), max(1, worker.parallel)
    loaded: asyncio.Queue = asyncio.Queue(maxsize=parallel + PREFETCH_BATCHES)
    finished: asyncio.Queue = asyncio.Queue()

    async def produce() -> None:
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            await loaded.put(asyncio.ensure_future(asyncio.to_thread(load_batch, worker, batch)))
        for _ in range(parallel):
            await loaded.put(None)

    async def consume() -> None:
        while (future := await loaded.get()) is not None:
            results = await future
            unreadable = [r for r in results if isinstance(r, dict)]
            readable = [r for r in results if not isinstance(r, dict)]
            await finished.put(unreadable + await process_isolated(worker, readable))

    with tqdm(total=len(items), unit="img", desc=worker.stage, disable=not progress) as bar:
        committer = asyncio.create_task(commit(finished, writer, report, bar))
        tasks = [asyncio.create_task(produce())] + [asyncio.create_task(consume()) for _ in range(parallel)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            finished.put_nowait(None)
            await committer  # every result finished before a failure is still written


async def process_items(worker: Worker, items: list[Item]) -> list[dict]:
    """One record body per item: loaded in threads, then processed `parallel` batches at a time, isolated.

    The whole-list form of `drive` for a distributor that hands a worker one block of items
    at a time (a Ray actor) and writes the results itself.
    """
    size = max(1, worker.batch_size)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    loaded = [r for part in await asyncio.gather(*(asyncio.to_thread(load_batch, worker, c) for c in chunks))
              for r in part]
    bodies = [r for r in loaded if isinstance(r, dict)]
    readable = [r for r in loaded if not isinstance(r, dict)]
    gate = asyncio.Semaphore(max(1, worker.parallel))

    async def one(batch: list) -> list[dict]:
        async with gate:
            return await process_isolated(worker, batch)

    batches = [readable[i : i + size] for i in range(0, len(readable), size)]
    for part in await asyncio.gather(*(one(b) for b in batches)):
        bodies += part
    return bodies


async def commit(finished: asyncio.Queue, writer: LogWriter, report: RunReport, bar: tqdm) -> None:
    """Group commit: results finished during one fsync go out together in the next, off the event loop."""
    while True:
        batch = [await finished.get()]
        while not finished.empty():
            batch.append(finished.get_nowait())
        bodies = [body for part in batch if part is not None for body in part]
        if bodies:
            records = await asyncio.to_thread(writer.append, bodies)
            report.count(records)
            bar.update(len(records))
            if report.failed:
                bar.set_postfix(failed=sum(report.failed.values()), refresh=False)
        if any(part is None for part in batch):
            return
