"""Each image's latest record of a stage as Arrow columns: where it lies, not what it holds.

A reader of 416k records (the export) cannot hold one Python dict per image. One pass
over the logs keeps, per record, its order key, its log and the byte offset of its line
(plus a few small fields a caller names, such as its status or image hash) in Arrow
arrays; Arrow then picks each image's greatest `(t, run, seq)`, exactly as
`records.latest` does. The records themselves are read back by offset, a batch at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from t2iverw.runner.records import log_paths
from t2iverw.storage import read_jsonl_at

CHUNK = 65536  # records gathered as Python values before they become Arrow arrays
Column = Callable[[dict], object]  # a record -> one small value (str, int, bool or None) kept per image


def settings_key(record: dict) -> str | None:
    """The record's settings as canonical JSON: one value per distinct settings dict."""
    settings = record.get("settings")
    return None if settings is None else json.dumps(settings, sort_keys=True)


@dataclass(frozen=True)
class LatestRecords:
    """One row per image: image_id, status, the caller's columns, and where its latest record lies."""

    paths: list[Path]
    table: pa.Table  # image_id, status, *columns, log (index into paths), offset
    top_t: int = 0  # the greatest record timestamp read (0 when there is none): a writer stamps above it

    def ok(self) -> LatestRecords:
        """Only the images whose latest record is ok (failed and rejected ones describe nothing)."""
        return LatestRecords(self.paths, self.table.filter(pc.equal(self.table["status"], "ok")))

    def __len__(self) -> int:
        return self.table.num_rows

    def positions(self, image_ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """For each id, its row in `table` (null where it has no record): one hash of the table, not one per batch."""
        return pc.index_in(image_ids, value_set=self.table["image_id"])

    def column(self, name: str, positions: pa.Array) -> pa.Array:
        """`name` of the rows at `positions` (null where a position is null)."""
        return self.table[name].take(positions)

    def fetch(self, positions: Iterable[int | None]) -> list[dict | None]:
        """The records at `positions` (table rows; None stays None), read from their logs by offset."""
        positions = list(positions)
        wanted = sorted({p for p in positions if p is not None})
        logs = self.table["log"].take(pa.array(wanted, pa.int64())).to_pylist()
        offsets = self.table["offset"].take(pa.array(wanted, pa.int64())).to_pylist()
        found: dict[int, dict] = {}
        handles: dict[int, object] = {}
        try:
            for pos, log, offset in sorted(zip(wanted, logs, offsets), key=lambda x: (x[1], x[2])):
                fh = handles.get(log) or handles.setdefault(log, self.paths[log].open("rb"))
                fh.seek(offset)
                found[pos] = json.loads(fh.readline())
        finally:
            for fh in handles.values():
                fh.close()
        return [None if p is None else found[p] for p in positions]


def latest_columns(root: Path, stage: str, columns: dict[str, Column] | None = None) -> LatestRecords:
    """Each image's latest record of `stage` (greatest (t, run, seq), any status), as Arrow columns."""
    columns = {"status": lambda r: r.get("status"), **(columns or {})}
    paths = log_paths(root, stage)
    names = ["image_id", "t", "run", "seq", "log", "offset", *columns]
    chunks: list[pa.Table] = []
    values: dict[str, list] = {name: [] for name in names}

    def flush() -> None:
        if values["image_id"]:
            chunks.append(pa.table({k: _array(k, v) for k, v in values.items()}))
            for v in values.values():
                v.clear()

    for log, path in enumerate(paths):
        for offset, rec in read_jsonl_at(path):
            for name, value in (("image_id", rec["image_id"]), ("t", rec["t"]), ("run", rec["run"]),
                                ("seq", rec["seq"]), ("log", log), ("offset", offset)):
                values[name].append(value)
            for name, get in columns.items():
                values[name].append(get(rec))
            if len(values["image_id"]) >= CHUNK:
                flush()
    flush()
    if not chunks:
        return LatestRecords(paths, pa.table({k: _array(k, []) for k in names}).drop_columns(["t", "run", "seq"]))
    table = pa.concat_tables(chunks, promote_options="permissive")
    del chunks
    # a stable sort: for equal keys the first record read wins, as in records.latest
    table = table.sort_by([("image_id", "ascending"), ("t", "descending"), ("run", "descending"),
                           ("seq", "descending")])
    top_t = pc.max(table["t"]).as_py() or 0
    ids = table["image_id"]
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    keep = pa.concat_arrays([pa.array([True]), *first.chunks]) if len(ids) > 1 else pa.array([True])
    return LatestRecords(paths, table.filter(keep).drop_columns(["t", "run", "seq"]).combine_chunks(), top_t)


def _array(name: str, values: list) -> pa.Array:
    types = {"image_id": pa.string(), "t": pa.int64(), "run": pa.string(), "seq": pa.int64(), "log": pa.int32(),
             "offset": pa.int64()}
    if name in types:
        return pa.array(values, types[name])
    if not any(v is not None for v in values):
        return pa.nulls(len(values))  # typed by the chunks that have values
    array = pa.array(values)
    return array.dictionary_encode() if pa.types.is_string(array.type) else array  # statuses, settings repeat
