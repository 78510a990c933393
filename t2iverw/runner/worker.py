"""The worker contract, and the failure isolation every distributor applies to it.

A worker does the model work of one stage (SAM3, a VLM client, ...) and knows nothing of
files, shards or locks: it states its settings, loads one item, and turns a batch of
loaded items into one record body per item, ok or failed with a reason. Its hooks run in
this order: `open` (cheap: connect, learn what the settings depend on, e.g. the served
model), `settings`, `setup` (expensive: load weights; only when something is pending),
then `load`/`process` per batch, and `close`.

`process_isolated` makes one bad item cost one failed record instead of the run: an
exception on a batch is retried on its two halves, down to single items, and an
out-of-memory error on a batch likewise halves it before any item is failed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import Any

from t2iverw.errors import T2IError
from t2iverw.runner.reader import Item

DETAIL_CHARS = 500


class ItemFailed(Exception):
    """A per-item failure a worker expects (an unreadable image, a rejected request): reason code + detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class Worker:
    """Base class with no-op hooks; a stage's worker overrides what it needs."""

    stage: str = ""
    source: str = "model"
    batch_size: int = 1  # items per process() call
    parallel: int = 1  # process() calls in flight at once (an async worker's concurrency)

    def open(self) -> None | Awaitable[None]:
        return None

    def settings(self) -> dict:
        raise NotImplementedError

    def setup(self) -> None | Awaitable[None]:
        return None

    def load(self, item: Item) -> Any:
        """Read the item's input (runs in a thread); raise ItemFailed when it cannot be read."""
        return None

    def process(self, batch: list[tuple[Item, Any]]) -> list[dict] | Awaitable[list[dict]]:
        """One record body per item, in batch order: {"image_id", "status": "ok"|"failed", ...}."""
        raise NotImplementedError

    def close(self) -> None | Awaitable[None]:
        return None


async def call(hook, *args) -> Any:
    """Run a hook that may be sync or async; sync work goes to a thread so the event loop keeps moving."""
    if inspect.iscoroutinefunction(hook):
        return await hook(*args)
    result = await asyncio.to_thread(hook, *args)
    return await result if inspect.isawaitable(result) else result


def failed(item: Item, reason: str, detail: str = "") -> dict:
    return {"image_id": item.image_id, "status": "failed", "reason": reason, "detail": detail[:DETAIL_CHARS]}


def load_one(worker: Worker, item: Item) -> tuple[Item, Any] | dict:
    """(item, loaded input), or the failed record when it cannot be read."""
    try:
        return item, worker.load(item)
    except ItemFailed as exc:
        return failed(item, exc.reason, exc.detail)
    except T2IError:
        raise
    except Exception as exc:  # noqa: BLE001 - any error reading one item fails that item alone
        return failed(item, "load_error", describe(exc))


def load_batch(worker: Worker, items: list[Item]) -> list[tuple[Item, Any] | dict]:
    """`load_one` over a batch in one thread hand-off (a hand-off per item costs more than a small load)."""
    return [load_one(worker, item) for item in items]


async def process_isolated(worker: Worker, batch: list[tuple[Item, Any]]) -> list[dict]:
    """`worker.process(batch)`, with an exception confined to the items that raise it."""
    if not batch:
        return []
    try:
        bodies = await call(worker.process, batch)
    except T2IError:
        raise  # the run cannot go on (every server is gone): stop, keeping what is written
    except ItemFailed as exc:
        if len(batch) == 1:
            return [failed(batch[0][0], exc.reason, exc.detail)]
        return await _halves(worker, batch)
    except Exception as exc:  # noqa: BLE001 - a model error on one item must not end the run
        if len(batch) == 1:
            return [failed(batch[0][0], "out_of_memory" if is_oom(exc) else "error", describe(exc))]
        if is_oom(exc):
            _free_accelerator_memory()
        return await _halves(worker, batch)
    _check(batch, bodies)
    return bodies


async def _halves(worker: Worker, batch: list) -> list[dict]:
    mid = len(batch) // 2
    return await process_isolated(worker, batch[:mid]) + await process_isolated(worker, batch[mid:])


def _check(batch: list, bodies: list[dict]) -> None:
    ids = [item.image_id for item, _ in batch]
    if [b.get("image_id") for b in bodies] != ids:
        raise RuntimeError(f"worker returned records for {[b.get('image_id') for b in bodies]}, expected {ids}")


def is_oom(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (or any accelerator's 'out of memory' RuntimeError)."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:DETAIL_CHARS]
