"""`t2iverw import-release ROOT --out BUILD`: the official release as an ordinary build directory.

The release (one annotation JSON, `image/` crops, one part file per image; see layout.py),
or a person-search set in IRRA's layout (CUHK-PEDES, ICFG-PEDES, RSTPReid; see persons.py,
no part files), becomes what `index`, `caption`, `segment` and `split` would have written, so every later
command (`export`, `eval`, `train`, `show`, `caption-qa`) works unchanged:

- images.parquet: each record's crop, decoded once for its real size and SHA-256, with
  `image_id` = the file stem and `vehicle_id` = the record's `id` as a string; paths stay
  relative to the release root (build.json `source_root`);
- caption records (source "release", every caption kept), part records with the 24x24
  grids and no full-resolution masks, and `release` records with what only the release
  has (mask, prompt, split, file_path, boxes, augmented copies), all in the `import` logs;
- split.json from the `split` fields (`val` is the test side when no record says `test`);
- release_query_ids.txt / release_gallery_ids.txt: the authors' loader order of the test
  captions and images, for `eval --query-ids/--gallery-ids` on a score matrix of theirs.

The annotation list is streamed (ijson) a batch of records at a time, so memory does not
hold the parsed file: each batch's fields are checked in this process, its part files parse
and its crops decode in worker processes (the import is CPU-bound Python: threads would wait
on one GIL), and its checked records wait in a staging log on disk; what stays in memory is
one Arrow row per record and 8-byte digests for the duplicate checks. Once the whole file is
read (a malformed file is only found as it is read), images.parquet and split.json are
written and the staged records are appended to the three logs, each by a child of its own.

A record the authors' code could not use (a missing part file, a category outside the
six, a grid that is not 24x24 or not binary, a duplicate file_path, a missing or corrupt
image) is not imported and is listed in rejected.jsonl with its reason; so is a file stem that
is not an id of letters, digits, '_' and '-' (as `index` rules: ids name files and sit in pages).
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterator
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from t2iverw.build import REJECTED, BuildDir
from t2iverw.constants import AUGMENTED, GRID
from t2iverw.errors import T2IError
from t2iverw.grid import pack_grid
from t2iverw.index import INDEX_LOCK, META_FIELDS, PROGRESS, SCHEMA, ImageChecker, chunks, write_outputs
from t2iverw.release.layout import (
    TEST,
    TRAIN,
    VAL,
    BadRecord,
    Record,
    augmented_path,
    inside,
    read_annotations,
    read_part_file,
)
from t2iverw.release.sources import RELEASE, Source, find_source
from t2iverw.runner import open_log
from t2iverw.runner.records import SUFFIX, stage_dir
from t2iverw.split import make_split
from t2iverw.storage import exclusive, read_jsonl, write_text

QUERY_ORDER = "release_query_ids.txt"
GALLERY_ORDER = "release_gallery_ids.txt"
LOG = "import"
STAGES = ("captions", "parts", "release")
STAGING = ".import-staging.jsonl"  # checked records between the read and the log writes; removed at the end
BATCH = 512
ROWS = pa.schema([*SCHEMA, ("split", pa.string()), ("order", pa.int64()), ("n_captions", pa.int32()),
                  ("has_parts", pa.bool_())])  # an index row and what the import still needs of its record


@dataclass
class ImportSummary:
    dataset: str
    annotations: str
    images: int
    identities: int
    queries: int
    parts: int
    split: dict
    rejected: Counter
    joined: Counter | None

    def lines(self) -> list[str]:
        c = self.split["counts"]
        out = [f"imported {self.images} images of {self.identities} identities from {self.dataset} ({self.annotations})",
               f"{self.queries} captions (each a query), part grids on {self.parts} images",
               f"split: train {c['train']['ids']} identities / {c['train']['images']} images, "
               f"test {c['test']['ids']} / {c['test']['images']}"]
        if self.rejected:
            reasons = ", ".join(f"{n} {r}" for r, n in self.rejected.most_common())
            out.append(f"rejected {sum(self.rejected.values())} records ({reasons}); see {REJECTED}")
        if self.joined is not None:
            out.append(f"VERI-Wild metadata joined on {self.joined['joined']} images, {self.joined['unmatched']} "
                       f"unmatched" + (f", {self.joined['vehicle differs']} with another vehicle id"
                                       if self.joined["vehicle differs"] else ""))
        return out


def import_release(root: str | Path, out: str | Path, *, fmt: str = "auto", veri_wild: str | Path | None = None,
                   encoding: str = "utf-8", workers: int = 8) -> ImportSummary:
    """Read the release (or person-search set, `fmt`) at `root` into the build directory `out`
    (see the module docstring)."""
    root, out = check_root(root), Path(out)
    source = find_source(root, fmt)
    if veri_wild is not None and source.format != RELEASE:
        raise T2IError(f"--veri-wild joins VERI-Wild metadata onto a vehicle release, not {source.dataset}")
    with exclusive(out / INDEX_LOCK, f"another `t2iverw import-release` or `index` is writing {out}"):
        return _import_release(root, out, source, veri_wild=veri_wild, encoding=encoding, workers=workers)


def _import_release(root: Path, out: Path, source: Source, *, veri_wild, encoding: str, workers: int) -> ImportSummary:
    settings = _settings(source)
    veri_wild_info = _vehicle_info(Path(veri_wild), encoding) if veri_wild is not None else None
    staging, fresh = out / STAGING, not (out / PROGRESS).exists()
    try:
        try:
            read = read_records(root, out, source, staging, workers=workers, veri_wild_info=veri_wild_info)
        except T2IError:  # a malformed file is found only as it is read: leave no decoding log of this run
            if fresh:
                (out / PROGRESS).unlink(missing_ok=True)
            raise
        side = test_side(read.rows.column("split"))
        keep = _reject_val_beside_test(read, side)
        if not keep.any():
            raise T2IError(f"no usable record in {source.annotations} ({len(read.rejected)} rejected; "
                           f"see {out / REJECTED})")
        rows, read.rows = (read.rows if keep.all() else read.rows.filter(keep)), None  # one copy of the rows held
        read.rejected.sort(key=lambda r: r["record"])
        write_outputs(out, rows.sort_by([("vehicle_id", "ascending"), ("image_id", "ascending")]),
                      read.rejected, root, {"source_format": source.format, "release": settings,
                                            "veri_wild": str(Path(veri_wild).resolve()) if veri_wild else None})
        pa.default_memory_pool().release_unused()  # the sorted copy written: give it back before the split's lists
        split = make_split(out, from_file=source.annotations, from_records=read.published_entries())
        read.published = None  # the split is made: not held while the logs are written
        _write_records(BuildDir.open(out), staging, {TRAIN, TEST} if side == TEST else None, settings)
    finally:
        staging.unlink(missing_ok=True)
    queries, gallery = loader_orders(rows)
    write_text(out / QUERY_ORDER, "".join(f"{q}\n" for q in queries))
    write_text(out / GALLERY_ORDER, "".join(f"{g}\n" for g in gallery))
    (out / PROGRESS).unlink(missing_ok=True)
    counts = rows.column("n_captions").to_numpy()
    return ImportSummary(source.dataset, source.annotations.name, len(rows),
                         len(pc.unique(rows.column("vehicle_id"))), int(counts.sum()),
                         int(pc.sum(rows.column("has_parts")).as_py() or 0), split,
                         Counter(_reason_kind(r["reason"]) for r in read.rejected), read.joined)


@dataclass
class Read:
    """What one pass over the annotation file leaves in memory: one Arrow row per usable record,
    the rejections, and the published id/split of every record (the checked records themselves
    wait on disk, in the staging log)."""

    rows: pa.Table
    rejected: list[dict]
    published: Published
    joined: Counter | None

    def published_entries(self) -> Iterator[dict]:
        return self.published.entries()


class Published:
    """Each record's published id, split and image id as the split reads them (split.py
    `_release_split`): the id as a string, the image id as the file stem. Ids and splits repeat,
    so each distinct value is held once: ~80 bytes a record where tuples of the entries held ~400."""

    def __init__(self):
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.images: list[str | None] = []

    def add(self, entry: dict) -> None:
        self.ids.append(sys.intern(str(entry["id"])))
        self.splits.append(sys.intern(entry["split"]))
        image, path = entry.get("image_id"), entry.get("file_path")
        self.images.append(image if isinstance(image, str) else
                           Path(path.replace("\\", "/")).stem if isinstance(path, str) else None)

    def entries(self) -> Iterator[dict]:
        return ({"id": v, "split": s, "image_id": i} for v, s, i in zip(self.ids, self.splits, self.images))


def read_records(root: Path, out: Path, source: Source, staging: Path, *, workers: int,
                 veri_wild_info: dict | None = None) -> Read:
    """Stream the annotation file a batch of records at a time: check each record's fields, then
    hand its part file and its crop to the worker processes, and write the
    checked record to `staging`. One batch is checked ahead while the last one is parsed and
    decoded, so the workers never wait on this loop. The first record wins a duplicate file_path
    or image id."""
    read = Read(ROWS.empty_table(), [], Published(), Counter() if veri_wild_info is not None else None)
    seen, rows = Seen(), []
    is_dir = functools.lru_cache(maxsize=4096)(os.path.isdir)  # the folders of the augmented copies, this run
    staging.unlink(missing_ok=True)
    parsers = ProcessPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1)))
    with parsers, ImageChecker(root, out, workers, pool=parsers) as images, \
            ThreadPoolExecutor(max_workers=1) as background, staging.open("wb") as staged:
        images.bar.set_description("import")

        def submit(batch: list) -> tuple[list[Record], Iterator, Future]:
            """Check a batch's fields and start reading its part files and crops."""
            for _, item in batch:
                if (entry := source.published(item)) is not None:
                    read.published.add(entry)
            records = []
            for index, item in batch:
                try:
                    records.append(seen.check(root, source.check(item, index)))
                except BadRecord as exc:
                    read.rejected.append(_rejection(item, index, exc))
            seen.flush()
            parsing = parsers.map(_read_parts, [(root, r.boxes, r.index, r.split) for r in records], chunksize=128)
            return records, parsing, background.submit(images.check, [r.file_path for r in records])

        def finish(records: list[Record], parsing: Iterator, decoding: Future) -> None:
            """Reject what failed, keep a row per usable record and stage the record itself."""
            batch_rows, batch_staged = [], []
            for rec, (grids, problem), result in zip(records, list(parsing), decoding.result()):
                if problem is None and not result.ok:
                    problem = result.reason
                if problem is not None:
                    read.rejected.append({"record": rec.index, "file_path": rec.file_path, "reason": problem})
                    continue
                entry = _entry(rec)
                if veri_wild_info is not None:
                    found = _join(entry, veri_wild_info)
                    read.joined["unmatched" if found == "unmatched" else "joined"] += 1
                    read.joined["vehicle differs"] += found == "vehicle differs"
                batch_rows.append({**entry, "width": result.width, "height": result.height, "sha256": result.sha256,
                                   "split": rec.split, "order": rec.index, "n_captions": len(rec.captions),
                                   "has_parts": grids is not None})
                batch_staged.append(_staged(root, rec, grids, source.augmented, is_dir) | {"sha256": result.sha256})
            staged.write(b"".join(orjson.dumps(s) + b"\n" for s in batch_staged))
            if batch_rows:
                rows.append(pa.Table.from_pylist(batch_rows, schema=ROWS))

        ahead = None
        for batch in chunks(enumerate(read_annotations(source.annotations)), BATCH):
            current = submit(batch)
            if ahead is not None:
                finish(*ahead)
            ahead = current
        if ahead is not None:
            finish(*ahead)
    if rows:
        read.rows = pa.concat_tables(rows)
    return read


class Seen:
    """The file paths and image ids of the records accepted so far, to refuse a second one.

    Each is held as a 64-bit keyed digest, 8 bytes in a sorted NumPy array (merged a batch at a
    time), not as a Python string in a set (~100 bytes each): two distinct names share a digest
    with odds of ~1e-8 in a 416k-record release."""

    def __init__(self):
        self.digests = np.empty(0, np.uint64)  # sorted: every batch before the current one
        self.pending: set[int] = set()  # the current batch's

    def check(self, root: Path, rec: Record) -> Record:
        for what, path in (("file_path", rec.file_path), ("boxes", rec.boxes)):
            if path is not None and not inside(root, path):
                raise BadRecord(f"record {rec.index}: {what} {path} leaves the release root through a symlink")
        path, image = _digest(b"path", rec.file_path), _digest(b"image", rec.image_id)
        if self._has(path):
            raise BadRecord(f"record {rec.index}: duplicate file_path {rec.file_path}")
        if self._has(image):
            raise BadRecord(f"record {rec.index}: duplicate image id {rec.image_id} (file stem of {rec.file_path})")
        self.pending.update((path, image))
        return rec

    def _has(self, digest: int) -> bool:
        if digest in self.pending:
            return True
        at = int(np.searchsorted(self.digests, np.uint64(digest)))
        return at < len(self.digests) and int(self.digests[at]) == digest

    def flush(self) -> None:
        """Merge the current batch into the sorted array (a stable sort of two sorted runs: linear)."""
        if self.pending:
            merged = np.concatenate([self.digests, np.fromiter(self.pending, np.uint64, len(self.pending))])
            self.digests, self.pending = np.sort(merged, kind="stable"), set()


def _digest(kind: bytes, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8, key=kind).digest(),
                          "little")


def _read_parts(job: tuple[Path, str | None, int, str]) -> tuple[list[str] | None, str | None]:
    """(a record's six part grids packed, or None when it names no part file; the reason it is
    unusable, or None). Runs in a worker process: it takes and returns only small values."""
    root, boxes, index, split = job
    if boxes is None:
        return None, None
    try:
        grids = read_part_file(root / boxes, f"record {index}")
    except BadRecord as exc:
        return None, str(exc)
    if split == TRAIN and not grids.any():
        return None, f"record {index}: the part file {boxes} of a train record names no part"
    return [row.tobytes().hex() for row in np.packbits(grids.reshape(len(grids), -1), axis=1)], None  # pack_grid


def _staged(root: Path, rec: Record, grids: list[str] | None, augmented: bool, is_dir) -> dict:
    """A checked record as the import logs will need it, grids packed (72 bytes each)."""
    return {"image_id": rec.image_id, "split": rec.split, "order": rec.index, "captions": rec.captions,
            "grids": grids,
            "mask": None if rec.mask is None else pack_grid(rec.mask), "prompt": rec.prompt,
            "file_path": rec.file_path, "boxes": rec.boxes,
            "augmented": augmented_copies(root, rec, is_dir) if augmented else None}


def _entry(rec: Record) -> dict:
    """The index row of a record, before its crop is decoded (metadata null unless joined)."""
    return {"image_id": rec.image_id, "vehicle_id": rec.vehicle_id, "camera_id": None, "time": None, "model": None,
            "type": None, "color": None, "path": rec.file_path}


def _settings(source: Source) -> dict:
    """What shaped the imported records: the format, the dataset and the exact annotation file."""
    with source.annotations.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"format": source.format, "release": source.dataset, "annotations": source.annotations.name,
            "annotations_sha256": digest}


def _reject_val_beside_test(read: Read, side: str) -> np.ndarray:
    """Which rows stay: a build holds train and test only, so with "test" records present, other
    non-train records have no place (each is rejected with that reason)."""
    if side != TEST:
        return np.ones(len(read.rows), bool)
    keep = pc.is_in(read.rows.column("split"), pa.array([TRAIN, TEST])).to_numpy(zero_copy_only=False)
    for order, path, split in zip(*(read.rows.filter(~keep).column(c).to_pylist() for c in ("order", "path", "split"))):
        read.rejected.append({"record": order, "file_path": path,
                              "reason": f"split {split!r} beside 'test' records: a build holds train and test only"})
    return keep


def _write_records(bd: BuildDir, staging: Path, splits: set[str] | None, settings: dict) -> None:
    """Caption, part and release records in the `import` logs, read back from the staging log a
    batch at a time; a rerun appends only what is missing.

    This process opens (locks) all three logs, so either all are written or none; then each log
    is stamped and written by a forked child of its own, side by side: encoding 3 records an
    image is the import's last step that one core would otherwise do alone."""
    with ExitStack() as stack:
        logs = {stage: stack.enter_context(open_log(bd, stage, LOG, source="release", settings=settings))
                for stage in STAGES}
        done = {stage: _already_written(bd, stage, log.fp) for stage, log in logs.items()}
        bar = stack.enter_context(tqdm(desc="import records", unit="rec", total=3 * _count_lines(staging)))
        fork = multiprocessing.get_context("fork")
        counts = fork.Array("q", len(STAGES), lock=False)  # records read back, per log: the bar's count
        writers = [fork.Process(target=_write_stage, args=(logs[stage], done[stage], staging, splits, stage, counts, k),
                                name=f"import {stage}") for k, stage in enumerate(STAGES)]
        for w in writers:
            w.start()
        while any(w.is_alive() for w in writers):
            time.sleep(0.2)
            bar.update(sum(counts) - bar.n)
        bar.update(sum(counts) - bar.n)
        failed = [w.name for w in writers if w.exitcode != 0]
        if failed:
            raise T2IError(f"writing the {', '.join(failed)} records failed (see the error above); "
                           "rerun the import to append what is missing")


def _write_stage(log, done: set[str], staging: Path, splits: set[str] | None, stage: str, counts, k: int) -> None:
    """One log's records, in a forked child that writes through the parent's open, locked log
    (and stops if the parent is gone: a killed import leaves no writer behind)."""
    parent = os.getppid()
    for batch in chunks(_read_staged(staging), BATCH):
        if os.getppid() != parent:
            os._exit(1)
        bodies = [body for r in batch if (splits is None or r["split"] in splits) and r["image_id"] not in done
                  and (body := _BODIES[stage](r)) is not None]
        # the batch's own hashes (those images.parquet was written from): the build's would load
        # every image's into each child
        log.append(bodies, shas={r["image_id"]: r["sha256"] for r in batch})
        counts[k] += len(batch)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _read_staged(staging: Path) -> Iterator[dict]:
    """The staged records, in order (the staging log is this run's own, whole: it is rewritten
    from the start on every run, so neither its format nor a torn tail outlives the run)."""
    with staging.open("rb") as fh:
        yield from map(orjson.loads, fh)


def _caption_body(r: dict) -> dict | None:
    return {"image_id": r["image_id"], "status": "ok", "caption_id": r["image_id"], "text": r["captions"][0],
            "texts": r["captions"]} if r["captions"] else None


def _parts_body(r: dict) -> dict | None:
    return {"image_id": r["image_id"], "status": "ok", "grid": {"shape": list(GRID), "cells": r["grids"]}} \
        if r["grids"] is not None else None


def _release_body(r: dict) -> dict:
    return {"image_id": r["image_id"], "status": "ok", "order": r["order"], "mask": r["mask"], "prompt": r["prompt"],
            "split": r["split"], "file_path": r["file_path"], "boxes": r["boxes"], "augmented": r["augmented"]}


_BODIES = dict(zip(STAGES, (_caption_body, _parts_body, _release_body)))  # a staged record's record per log (None: none)


def _already_written(bd: BuildDir, stage: str, fp: str) -> set[str]:
    """Images the import log already holds a record of under these settings (a killed import resumes)."""
    return {r["image_id"] for r in read_jsonl(stage_dir(bd.root, stage) / f"{LOG}{SUFFIX}") if r.get("fp") == fp}


def _reason_kind(reason: str) -> str:
    """A short name of a rejection reason, for the summary line."""
    if "part file" in reason and reason.endswith("is missing"):
        return "missing part file"
    for kind in ("duplicate file_path", "duplicate image id", "part file", "not one of", "not a 24x24 grid",
                 "is not binary", "without 'boxes'", "missing file", "corrupt image", "unreadable file",
                 "names no part", "beside 'test'"):
        if kind in reason:
            return {"part file": "bad part file", "not one of": "unknown category", "not a 24x24 grid": "grid not 24x24",
                    "is not binary": "grid not binary", "without 'boxes'": "train record without boxes",
                    "names no part": "train record without parts", "beside 'test'": "val beside test"}.get(kind, kind)
    return "malformed record"


def _rejection(item: object, index: int, exc: BadRecord) -> dict:
    return {"record": index, "file_path": item.get("file_path") if isinstance(item, dict) else None, "reason": str(exc)}


def augmented_copies(root: Path, rec: Record, is_dir=os.path.isdir) -> dict[str, str] | None:
    """The release's dark/light/noisy copies of a record, when all three exist. A file is looked up
    only where its folder exists; with `is_dir` cached, each folder is looked up once in an import
    (most releases have none of the three)."""
    found = {kind: augmented_path(rec.file_path, kind) for kind in AUGMENTED}
    return found if all(is_dir(os.path.join(root, os.path.dirname(p))) and (root / p).is_file() and inside(root, p)
                        for p in found.values()) else None


def test_side(splits: pa.ChunkedArray | pa.Array) -> str:
    """Which split value is the test set: "test", or anything but train when no record says test."""
    return TEST if pc.any(pc.equal(splits, TEST)).as_py() else VAL


def loader_orders(rows: pa.Table) -> tuple[list[str], list[str]]:
    """(query ids, gallery ids) in the authors' loader order: test records in JSON order, their
    captions in list order; only records that were imported."""
    from t2iverw.constants import query_id

    split = rows.column("split")
    test = rows.filter(pc.equal(split, TEST) if test_side(split) == TEST else pc.not_equal(split, TRAIN))
    test = test.sort_by("order")
    ids, counts = test.column("image_id").to_pylist(), test.column("n_captions").to_pylist()
    return [query_id(i, k) for i, n in zip(ids, counts) for k in range(n)], ids


def _vehicle_info(veri_wild: Path, encoding: str) -> dict[str, dict]:
    """VERI-Wild's vehicle_info.txt by image id. Repeated values (vehicle, camera, model, type, colour)
    share one string: at 416k entries that is most of an entry's memory."""
    from t2iverw.index import read_vehicle_info

    info, _ = read_vehicle_info(veri_wild, encoding)
    shared = {"vehicle_id", "camera_id", "model", "type", "color"}
    return {e["image_id"]: {k: sys.intern(v) if k in shared else v for k, v in e.items()}
            for batch in info.to_batches() for e in batch.to_pylist()}


def _join(entry: dict, by_image: dict[str, dict]) -> str:
    """Fill camera, time, model, type and colour from VERI-Wild, by image id; say how it went.

    A release file stem is matched to a VERI-Wild image id as it is, or as its part after
    the vehicle-id prefix (`<id>_<image id>`, the release's "prefixid" naming): "joined",
    "unmatched", or "vehicle differs" (joined, but VERI-Wild names another vehicle).
    """
    stem = entry["image_id"]
    meta = by_image.get(stem)
    if meta is None and "_" in stem:
        prefix, rest = stem.split("_", 1)
        candidate = by_image.get(rest)
        if candidate is not None and _same_vehicle(prefix, candidate["vehicle_id"]):
            meta = candidate
    if meta is None:
        return "unmatched"
    for key in META_FIELDS:
        entry[key] = meta[key]
    return "joined" if _same_vehicle(entry["vehicle_id"], meta["vehicle_id"]) else "vehicle differs"


def _same_vehicle(a: str, b: str) -> bool:
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


def check_root(root: Path) -> Path:
    root = Path(root).resolve()
    if not root.is_dir():
        raise T2IError(f"release root {root} does not exist or is not a directory")
    return root
