"""The reader: which images are pending for *these* settings, for *this* shard.

It reads the index and the stage's own records, nothing else. An image is pending when
it has no record; when its record was made from another version of the image (its
hash no longer matches the index); when a person rejected its caption; when it failed
and failures are retried; and, under `redo`, when its record came from other settings.
A person's accepted or edited record is final. Under the default mode, records of other
settings anywhere in the build stop the run (settings.py); the check spans every shard,
so shards of one build always agree.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, overload

import pyarrow as pa

from t2iverw.build import BuildDir
from t2iverw.errors import T2IError
from t2iverw.runner.columnar import LatestRecords, latest_columns
from t2iverw.runner.records import records
from t2iverw.runner.settings import Mode, conflict_error, fingerprint

SHARD_KEY = b"t2iverw-segment-shard"  # kept from the segment stage's first release: shards stay where they were


@dataclass(frozen=True)
class Item:
    """One image to process: its id, resolved path and index row (metadata, hash)."""

    image_id: str
    path: Path
    row: dict


class Items(Sequence[Item]):
    """The pending items, held as an Arrow table of their index rows: an Item (a dict and a Path) is
    made when it is read, so 416k pending images cost their rows' bytes, not 416k dicts."""

    def __init__(self, rows: pa.Table, source_root: Path | None):
        self.rows, self.source_root = rows, source_root

    def __len__(self) -> int:
        return self.rows.num_rows

    @overload
    def __getitem__(self, key: int) -> Item: ...
    @overload
    def __getitem__(self, key: slice) -> list[Item]: ...

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._items(self.rows.slice(start, max(0, stop - start)))
        index = key + len(self) if key < 0 else key
        if not 0 <= index < len(self):
            raise IndexError(key)
        return self._items(self.rows.slice(index, 1))[0]

    def __iter__(self) -> Iterator[Item]:
        for batch in self.rows.to_batches(max_chunksize=4096):
            yield from self._items(batch)

    def _items(self, rows) -> list[Item]:
        return [Item(r["image_id"], self.source_root / r["path"], r) for r in rows.to_pylist()]


@dataclass
class Pending:
    items: Items
    floor: int  # the greatest record timestamp seen: the writer stamps above it
    counts: Counter = field(default_factory=Counter)  # why images are pending, and why others are not


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


def shard_of(image_id: str, n_shards: int) -> int:
    """Stable shard of an image: a keyed hash of its id, so no ordering or coordination matters."""
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=8, key=SHARD_KEY).digest()
    return int.from_bytes(digest, "big") % n_shards


class Latest(NamedTuple):
    """What deciding an image's pending work needs of its latest record (made per row, never held)."""

    status: str
    fp: str | None
    source: str | None
    image_sha256: str | None


LATEST_COLUMNS = {"fp": lambda r: r.get("fp"), "source": lambda r: r.get("source"),
                  "image_sha256": lambda r: r.get("image_sha256")}


def pending(
    build: BuildDir,
    stage: str,
    settings: dict,
    *,
    shard: tuple[int, int] | None = None,
    mode: Mode = Mode.CHECK,
    retry_failed: bool = False,
    limit: int | None = None,
    columns: tuple[str, ...] = (),
) -> Pending:
    """The images of `shard` that a run with `settings` must process, in index order.

    The latest records are Arrow columns (`runner.columnar`), so a resume over 416k records
    holds no Python object per image.
    """
    fp = fingerprint(settings)
    latest = latest_columns(build.root, stage, LATEST_COLUMNS)
    table = build.images(list(dict.fromkeys(("image_id", "path", "sha256", *columns))))
    if mode is Mode.CHECK:
        _refuse_other_settings(build, stage, settings, fp, latest, table)
    counts: Counter = Counter()
    todo = array("q")  # the pending rows' numbers; the rows stay in the Arrow table
    for position, image_id, sha256, rec in _with_latest(table, latest):
        if shard is not None and shard_of(image_id, shard[1]) != shard[0]:
            continue
        why = _why_pending(rec, sha256, fp, mode, retry_failed)
        counts[why] += 1
        if why.startswith("pending"):
            todo.append(position)
    todo = todo[:limit] if limit is not None else todo
    source_root = build.source_root if todo else None  # resolved only when there is work to read images for
    return Pending(Items(table.take(pa.array(todo, pa.int64())), source_root), latest.top_t, counts)


def _with_latest(table: pa.Table, latest: LatestRecords, batch: int = 4096
                 ) -> Iterator[tuple[int, str, str, Latest | None]]:
    """(row number, image id, index hash, its latest record or None) for each index row, in order."""
    at = latest.positions(table["image_id"])  # one hash of the latest records for the whole index
    for start in range(0, table.num_rows, batch):
        rows = at.slice(start, batch)
        found = zip(*(latest.column(name, rows).to_pylist() for name in ("status", *LATEST_COLUMNS)))
        ids = table["image_id"].slice(start, batch).to_pylist()
        shas = table["sha256"].slice(start, batch).to_pylist()
        for offset, (image_id, sha256, (status, *rest)) in enumerate(zip(ids, shas, found)):
            yield start + offset, image_id, sha256, None if status is None else Latest(status, *rest)


def _why_pending(rec: Latest | None, sha256: str, fp: str, mode: Mode, retry_failed: bool) -> str:
    """'pending: <reason>' or 'done: <reason>' for one image."""
    if rec is None:
        return "pending: new"
    if rec.image_sha256 != sha256:
        return "pending: image changed"
    if rec.status == "rejected":
        return "pending: rejected by a reviewer"
    if rec.source == "human":
        return "done: reviewed"
    other = rec.fp != fp
    if rec.status == "failed":
        return "pending: failed" if retry_failed or (other and mode is Mode.REDO) else "done: failed"
    if other:
        return "pending: other settings" if mode is Mode.REDO else "done: other settings kept"
    return "done"


def _refuse_other_settings(build: BuildDir, stage: str, settings: dict, fp: str, latest: LatestRecords,
                           table) -> None:
    """Raise when ok records of other settings stand for images of the current index (an Arrow table)."""
    others: Counter = Counter()
    for _, _, sha, s in _with_latest(table, latest, 65536):
        if s is not None and s.status == "ok" and s.source != "human" and s.fp != fp and s.image_sha256 == sha:
            others[s.fp] += 1
    if others:
        raise conflict_error(stage, settings, others, _settings_of(build, stage, set(others)))


def _settings_of(build: BuildDir, stage: str, fps: set[str]) -> dict[str, dict]:
    """fingerprint -> the settings dict of a record carrying it (one pass, stops early)."""
    found: dict[str, dict] = {}
    for rec in records(build.root, stage):
        if rec.get("fp") in fps and rec["fp"] not in found:
            found[rec["fp"]] = rec.get("settings") or {}
            if len(found) == len(fps):
                break
    return found
