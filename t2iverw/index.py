"""`t2iverw index`: read a VERI-Wild (or VeRi-776) root into BUILD/images.parquet.

The source layout is detected (VERI-Wild: `train_test_split/vehicle_info.txt`;
VeRi-776: `image_train/` + `train_label.xml`, read by t2iverw/veri776.py) or named with
`--source`. Every selected image is fully decoded once here, so later stages can trust that an
indexed image opens. Bad inputs (a missing file, a truncated JPEG, a malformed
metadata line, a line not in the metadata's encoding) are skipped and listed in
BUILD/rejected.jsonl with a reason: one bad
crop in 400k must not stop a build. Decoding is the slow part (hours for all of
VERI-Wild on one core), so it runs on a thread pool and checkpoints to an append-only
progress log; a killed index resumes where it stopped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from t2iverw.build import BUILD_INFO, IMAGES, REJECTED
from t2iverw.constants import ID_RULE, is_id
from t2iverw.errors import T2IError
from t2iverw.storage import (
    JsonlWriter,
    atomic_path,
    exclusive,
    read_jsonl,
    write_json,
    write_text,
)
from t2iverw.veri776 import is_veri776, read_veri776

INFO_FILE = Path("train_test_split") / "vehicle_info.txt"
PROGRESS = ".index-progress.jsonl"
INDEX_LOCK = ".index.lock"  # one `index` or `import-release` writing a build at a time
SOURCES = ("veri-wild", "veri776")
META_FIELDS = ("camera_id", "time", "model", "type", "color")
# what a source's metadata gives for an image, before decoding it adds the last three columns of SCHEMA
ENTRY_SCHEMA = pa.schema([(f, pa.string()) for f in ("image_id", "vehicle_id", *META_FIELDS, "path")])
LINE_SCHEMA = pa.schema([("line", pa.int64()), *ENTRY_SCHEMA])  # the line number finds a duplicate's text
SCHEMA = pa.schema(list(ENTRY_SCHEMA) + [("width", pa.int32()), ("height", pa.int32()), ("sha256", pa.string())])
# Entries are held as Arrow columns from the first read on, never as a Python object per image:
# at VERI-Wild's 416k images those objects, not the pixels, were the stage's memory. Lines are
# parsed and images decoded this many at a time, each batch becoming columns at once.
BATCH = 8192


@dataclass
class IndexSummary:
    images: int
    identities: int
    rejected: Counter = field(default_factory=Counter)
    source: str = "veri-wild"
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"indexed {self.images} images of {self.identities} identities ({self.source})"]
        if self.rejected:
            reasons = ", ".join(f"{n} {r}" for r, n in self.rejected.most_common())
            out.append(f"rejected {sum(self.rejected.values())} ({reasons}); see {REJECTED}")
        return out + self.notes


def build_index(
    source_root: str | Path,
    out: str | Path,
    *,
    limit_ids: int | None = None,
    max_per_id: int | None = None,
    seed: int = 0,
    list_file: str | Path | None = None,
    workers: int = 8,
    source: str = "auto",
    encoding: str = "utf-8",
) -> IndexSummary:
    """Index `source_root` (a VERI-Wild or VeRi-776 tree; `source` "auto" detects which) into `out`.

    `encoding` is that of VERI-Wild's vehicle_info.txt; a line that does not decode is rejected.
    """
    source_root = Path(source_root).resolve()
    out = Path(out)
    with exclusive(out / INDEX_LOCK, f"another `t2iverw index` or `import-release` is writing {out}"):
        return _build_index(source_root, out, limit_ids=limit_ids, max_per_id=max_per_id, seed=seed,
                            list_file=list_file, workers=workers, source=source, encoding=encoding)


def _build_index(source_root: Path, out: Path, *, limit_ids, max_per_id, seed, list_file, workers, source,
                 encoding) -> IndexSummary:
    source = detect_source(source_root) if source == "auto" else source
    notes, corrections = [], []
    if source == "veri776":
        if list_file is not None:
            raise T2IError("--list selects VERI-Wild vid/imgid lines; for VeRi-776 use --limit-ids/--max-per-id")
        read = read_veri776(source_root)
        entries = pa.Table.from_pylist(read.entries, schema=ENTRY_SCHEMA)
        rejected, corrections = read.rejected, read.corrections
        del read
        if corrections:
            vehicles = ", ".join(sorted({c["vehicle_id"] for c in corrections}))
            notes.append(f"corrected {len(corrections)} labels of the known typeID=0 erratum (vehicles {vehicles} "
                         f"are SUVs); see {BUILD_INFO}")
    elif source == "veri-wild":
        entries, rejected = read_vehicle_info(source_root, encoding)
    else:
        raise T2IError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    entries, list_rejected = select(entries, limit_ids=limit_ids, max_per_id=max_per_id, seed=seed, list_file=list_file)
    rejected += list_rejected

    checked = check_images(source_root, out, entries, workers)
    rejected += _undecoded(entries, checked)
    columns, ok = entries.columns + checked.select(["width", "height", "sha256"]).columns, checked.column("ok")
    del entries, checked  # `columns` alone holds them now, so _in_one_piece can free each as it goes
    rows = _keep(pa.Table.from_arrays(_in_one_piece(columns), schema=SCHEMA), ok)
    if not rows.num_rows:
        raise T2IError(f"no usable images under {source_root} ({len(rejected)} rejected; see {out / REJECTED})"
                       if rejected else f"no images selected under {source_root}")
    selection = dict(limit_ids=limit_ids, max_per_id=max_per_id, seed=seed,
                     list_file=str(list_file) if list_file else None)
    info = {"source_format": source, "selection": selection}
    if source == "veri-wild":
        info["encoding"] = encoding
    if corrections:
        info["corrections"] = corrections
    write_outputs(out, rows, rejected, source_root, info)
    (out / PROGRESS).unlink(missing_ok=True)
    return IndexSummary(
        images=rows.num_rows,
        identities=pc.count_distinct(rows.column("vehicle_id")).as_py(),
        rejected=Counter(_reason_kind(r["reason"]) for r in rejected),
        source=source,
        notes=notes,
    )


def _undecoded(entries: pa.Table, checked: pa.Table) -> list[dict]:
    """The rejected.jsonl record of each entry whose image did not decode, in entry order."""
    failed = pc.invert(checked.column("ok"))
    names = entries.filter(failed).select(["vehicle_id", "image_id"]).to_pylist()
    reasons = checked.filter(failed).column("reason").to_pylist()
    return [{"image": f"{n['vehicle_id']}/{n['image_id']}", "reason": r} for n, r in zip(names, reasons)]


def _in_one_piece(columns: list[pa.ChunkedArray]) -> list[pa.Array]:
    """Each column as one array, taken from `columns` (left empty) one at a time, so that only one
    column is ever held twice.

    The columns were built a batch at a time, but Parquet's writer checks its dictionary-size
    limit per chunk: chunked columns of 100k ids write other (equally valid) bytes than the same
    rows in one piece, which is how images.parquet has always been written.
    """
    whole = []
    while columns:
        whole.append(columns.pop(0).combine_chunks())
    return whole


def _keep(table: pa.Table, mask: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The rows of `table` where `mask` is true; `table` itself when that is every row (the usual case),
    since a filter copies every column, which would double the stage's peak memory for nothing."""
    return table.filter(mask) if pc.any(pc.invert(mask)).as_py() else table


def detect_source(source_root: Path) -> str:
    """Which dataset layout `source_root` holds."""
    if not source_root.is_dir():
        raise T2IError(f"source root {source_root} does not exist or is not a directory")
    if (source_root / INFO_FILE).exists():
        return "veri-wild"
    if is_veri776(source_root):
        return "veri776"
    raise T2IError(f"{source_root} is neither a VERI-Wild root (no {INFO_FILE}) nor a VeRi-776 root "
                   "(no image_train/ with train_label.xml)")


def read_vehicle_info(source_root: Path, encoding: str = "utf-8") -> tuple[pa.Table, list[dict]]:
    """Parse vehicle_info.txt: (entries as an ENTRY_SCHEMA table in line order, rejected lines).
    The first line is a header.

    Lines are decoded one at a time, strictly: a line that is not valid `encoding` is
    rejected with its number (rather than read with replacement characters). An image id
    seen on an earlier line is rejected as a duplicate.
    """
    if not source_root.is_dir():
        raise T2IError(f"source root {source_root} does not exist or is not a directory")
    info = source_root / INFO_FILE
    if not info.exists():
        raise T2IError(f"{info} not found: expected a VERI-Wild root with {INFO_FILE}")
    try:
        "".encode(encoding)
    except LookupError:
        raise T2IError(f"unknown --encoding {encoding!r}") from None
    batches, rejected, parsed = [], [], []
    for lineno, raw in _numbered_lines(info):
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            rejected.append({"line": lineno, "text": raw[:200].decode("ascii", errors="backslashreplace"),
                             "reason": f"undecodable metadata line {lineno}: not valid {encoding} at byte "
                                       f"{exc.start} (give --encoding)"})
            continue
        if not line.strip():
            continue
        entry = _parse_info_line(line)
        if isinstance(entry, str):
            rejected.append({"line": lineno, "text": line[:200], "reason": f"malformed metadata line {lineno}: {entry}"})
            continue
        parsed.append((lineno, *entry))
        if len(parsed) == BATCH:
            batches.append(_as_batch(parsed, LINE_SCHEMA))
            parsed = []
    batches.append(_as_batch(parsed, LINE_SCHEMA))
    return _drop_duplicates(pa.Table.from_batches(batches), rejected, info, encoding)


def _as_batch(rows: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    """Tuples of `schema`'s fields, as columns: a batch's Python objects live only until this returns."""
    columns = list(zip(*rows)) or [[] for _ in schema]
    return pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(columns, schema)], schema=schema)


def _drop_duplicates(lines: pa.Table, rejected: list[dict], info: Path, encoding: str) -> tuple[pa.Table, list[dict]]:
    """Keep the first line of each image id; reject the others, with their text read again from `info`
    (a second pass for the rare duplicates rather than every line's text held).

    Found by sorting, not hashing: Arrow's hash table for dictionary-encoding 100k ids took
    ~190 bytes of RSS per id, a sort ~40. The sort is stable, so within a run of equal ids the
    first line comes first and every later one is a duplicate.
    """
    order = pc.sort_indices(lines.column("image_id"))
    ranked = lines.column("image_id").take(order).combine_chunks()
    duplicate_rows = order[1:].filter(pc.equal(ranked[1:], ranked[:-1])).to_numpy()
    if not len(duplicate_rows):
        return lines.drop_columns(["line"]), rejected
    wanted = set(lines.column("line").take(duplicate_rows).to_pylist())
    for lineno, raw in _numbered_lines(info):
        if lineno in wanted:
            line = raw.decode(encoding)
            image_id = _parse_info_line(line)[0]
            rejected.append({"line": lineno, "text": line[:200], "reason": f"duplicate image id {image_id}"})
    rejected.sort(key=lambda r: r["line"])  # as one pass would have listed them
    first = np.ones(lines.num_rows, dtype=bool)
    first[duplicate_rows] = False
    return lines.filter(first).drop_columns(["line"]), rejected


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line end) after the header, read as a stream, not held."""
    with path.open("rb") as fh:
        next(fh, None)
        for lineno, raw in enumerate(fh, start=2):
            yield lineno, raw.rstrip(b"\r\n")


def _parse_info_line(line: str) -> tuple[str, ...] | str:
    """The ENTRY_SCHEMA fields of one vehicle_info.txt line, or why it is not one. Ids are letters, digits,
    `_` and `-` only: they name files and URLs and appear in pages, so nothing else may pass."""
    fields = [f.strip() for f in line.split(";")]
    if len(fields) != 1 + len(META_FIELDS):
        return f"{len(fields)} fields, not {1 + len(META_FIELDS)}"
    vid, _, image_id = fields[0].partition("/")
    if not (is_id(vid) and is_id(image_id)):
        return f"id {fields[0][:80]!r} is not VEHICLE/IMAGE of {ID_RULE}"
    return (image_id, vid, *fields[1:], f"images/{vid}/{image_id}.jpg")


def select(
    entries: pa.Table, *, limit_ids: int | None, max_per_id: int | None, seed: int, list_file: str | Path | None
) -> tuple[pa.Table, list[dict]]:
    """Restrict to a published image list, or to a reproducible subset of ids and images per id;
    sorted by (vehicle_id, image_id)."""
    rejected: list[dict] = []
    if list_file is not None:
        wanted = _read_list(Path(list_file))
        keys = pc.binary_join_element_wise(entries.column("vehicle_id"), entries.column("image_id"), "/")
        at = pc.index_in(pa.array(wanted, pa.string()), value_set=keys.combine_chunks())
        rejected = [{"image": k, "reason": f"listed in {Path(list_file).name} but not in vehicle_info.txt"}
                    for k, i in zip(wanted, at.to_pylist()) if i is None]
        entries = entries.take(pc.drop_null(at))
    if limit_ids is not None:
        vehicles = pc.unique(entries.column("vehicle_id")).to_pylist()
        keep = sorted(vehicles, key=lambda v: keyed_hash(seed, "id", v))[:limit_ids]
        entries = entries.filter(pc.is_in(entries.column("vehicle_id"), value_set=pa.array(keep, pa.string())))
    if max_per_id is not None:
        entries = entries.filter(_first_per_vehicle(entries, max_per_id, seed))
    return _in_id_order(entries), rejected


def _in_id_order(entries: pa.Table) -> pa.Table:
    """`entries` sorted by (vehicle_id, image_id); `entries` itself when already so (as VERI-Wild's
    list is), since a sort copies every column: the largest memory of the read, for nothing."""
    order = pc.sort_indices(entries, sort_keys=[("vehicle_id", "ascending"), ("image_id", "ascending")])
    return entries if np.array_equal(order.to_numpy(), np.arange(len(order))) else entries.take(order)


def _first_per_vehicle(entries: pa.Table, max_per_id: int, seed: int) -> np.ndarray:
    """Which entries are among the first `max_per_id` of their vehicle, ranked by a seed-keyed hash of the image id."""
    ranks = pa.array(keyed_hash(seed, "image", i) for i in entries.column("image_id").to_pylist())
    ranked = pc.sort_indices(ranks).to_numpy()
    vehicles = pc.dictionary_encode(entries.column("vehicle_id").combine_chunks()).indices.to_numpy()
    count: Counter = Counter()
    keep = np.zeros(entries.num_rows, dtype=bool)
    for at, vehicle in zip(ranked, vehicles[ranked]):
        if count[vehicle] < max_per_id:
            count[vehicle] += 1
            keep[at] = True
    return keep


def _read_list(path: Path) -> list[str]:
    if not path.exists():
        raise T2IError(f"image list {path} not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    names = [n[: -len(".jpg")] if n.endswith(".jpg") else n for n in names]
    bad = next((n for n in names if n.count("/") != 1), None)
    if bad is not None:
        raise T2IError(f"{path}: expected one vehicle_id/image_id per line, got {bad!r}")
    return list(dict.fromkeys(names))


def keyed_hash(seed: int, *parts: str) -> str:
    """A seed-keyed, library-independent sort key: same order on every machine and version."""
    return hashlib.sha256(":".join([str(seed), *parts]).encode()).hexdigest()


class Decoded(NamedTuple):
    """What decoding one image found (a tuple: a resumed run holds one per image its log lists)."""

    ok: bool
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    reason: str | None = None


DECODED_SCHEMA = pa.schema(list(zip(Decoded._fields, [pa.bool_(), pa.int32(), pa.int32(), pa.string(), pa.string()])))


def check_images(source_root: Path, out: Path, entries: pa.Table, workers: int) -> pa.Table:
    """The decode result of every entry's image, in entry order, as columns ok, width, height, sha256
    and reason; results a killed run already logged are reused."""
    paths = entries.column("path")
    with ImageChecker(source_root, out, workers, total=len(paths)) as checker:
        return pa.Table.from_batches(
            [_as_batch(checker.check(paths.slice(at, BATCH).to_pylist()), DECODED_SCHEMA) for at in range(0, len(paths), BATCH)],
            schema=DECODED_SCHEMA)


class ImageChecker:
    """Decodes crops on a thread pool a batch at a time, logging each result to the progress
    file, so a caller that streams its records (import-release) decodes as it reads and a
    killed run decodes nothing twice. A caller busy in Python itself passes a process pool
    (`pool`), where decoding does not wait on its GIL."""

    def __init__(self, source_root: Path, out: Path, workers: int, total: int | None = None,
                 pool: Executor | None = None):
        self.source_root, self.progress_path, self.workers = source_root, out / PROGRESS, workers
        self.total, self._given_pool = total, pool

    def __enter__(self) -> ImageChecker:
        self.resumed = {r["path"]: _decoded(r) for r in read_jsonl(self.progress_path)}
        self._log = JsonlWriter(self.progress_path)
        self._pool = self._given_pool or ThreadPoolExecutor(max_workers=self.workers)
        self.bar = tqdm(total=self.total, desc="index", unit="img")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        if self._given_pool is None:
            self._pool.shutdown()
        self._log.close()

    def check(self, paths: list[str]) -> list[Decoded]:
        """The decode result of each path, in order (a path a killed run logged is not decoded again)."""
        found = {p: self.resumed.pop(p) for p in paths if p in self.resumed}
        decode = functools.partial(_check_one, self.source_root)
        for chunk in chunks([p for p in paths if p not in found], 256):
            results = list(self._pool.map(decode, chunk, chunksize=128))  # a process pool's batches; threads ignore it
            self._log.write_many(results)
            found.update((r["path"], _decoded(r)) for r in results)
        self.bar.update(len(paths))
        return [found[p] for p in paths]


def _decoded(result: dict) -> Decoded:
    return Decoded(result["ok"], result.get("width"), result.get("height"), result.get("sha256"), result.get("reason"))


def _check_one(source_root: Path, rel: str) -> dict:
    path = source_root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {"path": rel, "ok": False, "reason": f"missing file {rel}"}
    except OSError as exc:
        return {"path": rel, "ok": False, "reason": f"unreadable file {rel}: {exc}"}
    try:
        with Image.open(path) as im:
            im.load()  # a full decode: truncated JPEGs only fail here
            width, height = im.size
    except Exception as exc:  # PIL raises many types for corrupt data
        return {"path": rel, "ok": False, "reason": f"corrupt image {rel}: {exc}"}
    return {"path": rel, "ok": True, "width": width, "height": height, "sha256": hashlib.sha256(data).hexdigest()}


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last may be shorter), from any iterable."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _reason_kind(reason: str) -> str:
    """'corrupt image images/1/2.jpg: ...' -> 'corrupt image', for the summary line."""
    for kind in ("missing file", "unreadable file", "corrupt image", "malformed metadata line", "duplicate image id",
                 "undecodable metadata line", "no label", "unknown typeID", "unknown colorID", "malformed id"):
        if reason.startswith(kind):
            return kind
    return "not in vehicle_info.txt" if "not in vehicle_info.txt" in reason else reason


def write_outputs(out: Path, rows: pa.Table, rejected: list[dict], source_root: Path, info: dict) -> None:
    """images.parquet, rejected.jsonl and build.json (`info` adds what this source needs recorded)."""
    table = rows.select(SCHEMA.names).cast(SCHEMA)
    with atomic_path(out / IMAGES) as tmp:
        pq.write_table(table, tmp)
    write_text(out / REJECTED, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
    write_json(out / BUILD_INFO, {"source_root": str(source_root),
                                  # found again if the build and its source move together (build.py)
                                  "source_root_relative": os.path.relpath(source_root, out.resolve()),
                                  **info, "images": rows.num_rows, "rejected": len(rejected)})
