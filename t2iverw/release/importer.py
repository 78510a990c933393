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

A record the authors' code could not use (a missing part file, a category outside the
six, a grid that is not 24x24 or not binary, a duplicate file_path, a missing or corrupt
image) is not imported and is listed in rejected.jsonl with its reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from t2iverw.build import REJECTED, BuildDir
from t2iverw.constants import AUGMENTED, GRID
from t2iverw.errors import T2IError
from t2iverw.grid import pack_grid
from t2iverw.index import INDEX_LOCK, META_FIELDS, PROGRESS, check_images, write_outputs
from t2iverw.release.layout import (
    TEST,
    TRAIN,
    VAL,
    BadRecord,
    Record,
    augmented_path,
    check_record,
    inside,
    read_annotations,
    read_part_file,
)
from t2iverw.release.sources import RELEASE, Source, release_entry, find_source
from t2iverw.runner import open_log
from t2iverw.runner.records import SUFFIX, stage_dir
from t2iverw.split import make_split
from t2iverw.storage import exclusive, read_jsonl, write_text

QUERY_ORDER = "release_query_ids.txt"
GALLERY_ORDER = "release_gallery_ids.txt"
LOG = "import"
BATCH = 512


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
    dataset, annotations = source.dataset, source.annotations
    with ThreadPoolExecutor(max_workers=1) as background:
        decoding = []  # the crops decode (threads, outside the GIL) while the part files are parsed here

        def decode(records: list[Record]) -> None:
            entries = [_entry(r) for r in records]
            decoding.append(background.submit(check_images, root, out, entries, workers))

        checked = check_records(root, read_annotations(annotations), on_fields_checked=decode, check=source.check,
                                published=source.published)
        decoded = decoding[0].result()
    _reject_val_beside_test(checked)
    entries = [_entry(r) for r in checked.records]
    joined = join_veri_wild(entries, Path(veri_wild), encoding) if veri_wild is not None else None
    rows, kept = [], {}
    for entry, rec in zip(entries, checked.records):
        result = decoded[entry["path"]]
        if result.ok:
            rows.append({**entry, "width": result.width, "height": result.height, "sha256": result.sha256})
            kept[rec.image_id] = rec
        else:
            checked.rejected.append({"record": rec.index, "file_path": rec.file_path, "reason": result.reason})
    if not rows:
        raise T2IError(f"no usable record in {annotations} ({len(checked.rejected)} rejected; see {out / REJECTED})")
    rows.sort(key=lambda r: (r["vehicle_id"], r["image_id"]))
    checked.rejected.sort(key=lambda r: r["record"])
    settings = _settings(source)
    write_outputs(out, rows, checked.rejected, root, {"source_format": source.format, "release": settings,
                                                     "veri_wild": str(Path(veri_wild).resolve()) if veri_wild else None})
    split = make_split(out, from_file=annotations, from_records=checked.published)
    records = [r for r in checked.records if r.image_id in kept]
    _write_records(BuildDir.open(out), root, records, checked.grids, settings, source.augmented)
    queries, gallery = loader_orders(records, set(kept))
    write_text(out / QUERY_ORDER, "".join(f"{q}\n" for q in queries))
    write_text(out / GALLERY_ORDER, "".join(f"{g}\n" for g in gallery))
    (out / PROGRESS).unlink(missing_ok=True)
    return ImportSummary(dataset, annotations.name, len(rows), len({r["vehicle_id"] for r in rows}),
                         sum(len(r.captions) for r in records), sum(r.image_id in checked.grids for r in records),
                         split, Counter(_reason_kind(r["reason"]) for r in checked.rejected), joined)


def _entry(rec: Record) -> dict:
    """The index row of a record, before its crop is decoded (metadata null unless joined)."""
    return {"image_id": rec.image_id, "vehicle_id": rec.vehicle_id, "camera_id": None, "time": None, "model": None,
            "type": None, "color": None, "path": rec.file_path}


def _settings(source: Source) -> dict:
    """What shaped the imported records: the format, the dataset and the exact annotation file."""
    digest = hashlib.sha256(source.annotations.read_bytes()).hexdigest()
    return {"format": source.format, "release": source.dataset, "annotations": source.annotations.name,
            "annotations_sha256": digest}


def _reject_val_beside_test(checked: Checked) -> None:
    """A build holds train and test only: with "test" records present, other non-train records have no place."""
    if test_side(checked.records) != TEST:
        return
    keep = []
    for rec in checked.records:
        if rec.split in (TRAIN, TEST):
            keep.append(rec)
        else:
            checked.rejected.append({"record": rec.index, "file_path": rec.file_path,
                                     "reason": f"split {rec.split!r} beside 'test' records: a build holds train and "
                                               "test only"})
    checked.records = keep


def _write_records(bd: BuildDir, root: Path, records: list[Record], grids: dict[str, np.ndarray],
                   settings: dict, augmented: bool = True) -> None:
    """Caption, part and release records in the `import` logs; a rerun appends only what is missing."""
    bodies = {
        "captions": [{"image_id": r.image_id, "status": "ok", "caption_id": r.image_id, "text": r.captions[0],
                      "texts": list(r.captions)} for r in records if r.captions],
        "parts": [{"image_id": r.image_id, "status": "ok",
                   "grid": {"shape": list(GRID), "cells": [pack_grid(g) for g in grids[r.image_id]]}}
                  for r in records if r.image_id in grids],
        "release": [{"image_id": r.image_id, "status": "ok", "order": r.index,
                     "mask": None if r.mask is None else pack_grid(r.mask),
                     "prompt": r.prompt, "split": r.split, "file_path": r.file_path, "boxes": r.boxes,
                     "augmented": augmented_copies(root, r) if augmented else None} for r in records],
    }
    total = sum(len(b) for b in bodies.values())
    with tqdm(total=total, desc="import", unit="rec") as bar:
        for stage, items in bodies.items():
            with open_log(bd, stage, LOG, source="release", settings=settings) as log:
                done = _already_written(bd, stage, log.fp)
                bar.update(sum(b["image_id"] in done for b in items))
                todo = [b for b in items if b["image_id"] not in done]
                for start in range(0, len(todo), BATCH):
                    log.append(todo[start : start + BATCH])
                    bar.update(len(todo[start : start + BATCH]))


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


@dataclass
class Checked:
    """Records that passed every check, their part grids, and the rejected ones."""

    records: list[Record] = field(default_factory=list)
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # image_id -> (6, 24, 24) bool
    rejected: list[dict] = field(default_factory=list)
    published: list[dict] = field(default_factory=list)  # id, split, file_path of every record that has them


def check_records(root: Path, raw: list, on_fields_checked=None, check=check_record, published=None) -> Checked:
    """Check each record and its part file; the first record wins a duplicate file_path or image id.

    `raw` is consumed (each item set to None once checked): at 416k records its parsed grids
    are most of the import's memory.

    `on_fields_checked(records)` is called once every record's own fields are checked and
    before the part files are read, so that the crops can be decoded meanwhile. `check` reads
    one raw record of the source's format; `published(item)` its id and split for the split.
    """
    published = published or release_entry
    out = Checked()
    paths: set[str] = set()
    image_ids: set[str] = set()
    for index, item in enumerate(raw):
        raw[index] = None  # the parsed record (its grids as lists of lists) goes as its checked form comes
        entry = published(item)
        if entry is not None:
            out.published.append(entry)
        try:
            rec = check(item, index)
            for what, path in (("file_path", rec.file_path), ("boxes", rec.boxes)):
                if path is not None and not inside(root, path):
                    raise BadRecord(f"record {index}: {what} {path} leaves the release root through a symlink")
            if rec.file_path in paths:
                raise BadRecord(f"record {index}: duplicate file_path {rec.file_path}")
            if rec.image_id in image_ids:
                raise BadRecord(f"record {index}: duplicate image id {rec.image_id} (file stem of {rec.file_path})")
        except BadRecord as exc:
            out.rejected.append(_rejection(item, index, exc))
            continue
        paths.add(rec.file_path)
        image_ids.add(rec.image_id)
        out.records.append(rec)
    if on_fields_checked is not None:
        on_fields_checked(out.records)
    keep = []
    for rec in tqdm(out.records, desc="part files", unit="file"):
        try:
            if rec.boxes is not None:
                grids = read_part_file(root / rec.boxes, f"record {rec.index}")
                if rec.split == TRAIN and not grids.any():
                    raise BadRecord(f"record {rec.index}: the part file {rec.boxes} of a train record names no part")
                out.grids[rec.image_id] = grids
        except BadRecord as exc:
            out.rejected.append({"record": rec.index, "file_path": rec.file_path, "reason": str(exc)})
            continue
        keep.append(rec)
    out.records = keep
    return out


def _rejection(item: object, index: int, exc: BadRecord) -> dict:
    return {"record": index, "file_path": item.get("file_path") if isinstance(item, dict) else None, "reason": str(exc)}


def augmented_copies(root: Path, rec: Record) -> dict[str, str] | None:
    """The release's dark/light/noisy copies of a record, when all three exist."""
    found = {kind: augmented_path(rec.file_path, kind) for kind in AUGMENTED}
    return found if all((root / p).is_file() and inside(root, p) for p in found.values()) else None


def test_side(records: list[Record]) -> str:
    """Which split value is the test set: "test", or anything but train when no record says test."""
    return TEST if any(r.split == TEST for r in records) else VAL


def loader_orders(records: list[Record], image_ids: set[str]) -> tuple[list[str], list[str]]:
    """(query ids, gallery ids) in the authors' loader order: test records in JSON order, their
    captions in list order; only records that were imported."""
    from t2iverw.constants import query_id

    side = test_side(records)
    test = [r for r in records if r.image_id in image_ids and (r.split == TEST if side == TEST else r.split != TRAIN)]
    queries = [query_id(r.image_id, k) for r in test for k in range(len(r.captions))]
    return queries, [r.image_id for r in test]


def join_veri_wild(entries: list[dict], veri_wild: Path, encoding: str = "utf-8") -> Counter:
    """Fill camera, time, model, type and colour from VERI-Wild's vehicle_info.txt, by image id.

    A release file stem is matched to a VERI-Wild image id as it is, or as its part after
    the vehicle-id prefix (`<id>_<image id>`, the release's "prefixid" naming). Returns
    counts of joined, unmatched, and joined-but-the-vehicle-differs images.
    """
    from t2iverw.index import read_vehicle_info

    info, _ = read_vehicle_info(Path(veri_wild), encoding)
    by_image = {e["image_id"]: e for e in info}
    counts: Counter = Counter()
    for entry in entries:
        stem = entry["image_id"]
        meta = by_image.get(stem)
        if meta is None and "_" in stem:
            prefix, rest = stem.split("_", 1)
            candidate = by_image.get(rest)
            if candidate is not None and _same_vehicle(prefix, candidate["vehicle_id"]):
                meta = candidate
        if meta is None:
            counts["unmatched"] += 1
            continue
        for key in META_FIELDS:
            entry[key] = meta[key]
        counts["joined"] += 1
        if not _same_vehicle(entry["vehicle_id"], meta["vehicle_id"]):
            counts["vehicle differs"] += 1
    return counts


def _same_vehicle(a: str, b: str) -> bool:
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


def check_root(root: Path) -> Path:
    root = Path(root).resolve()
    if not root.is_dir():
        raise T2IError(f"release root {root} does not exist or is not a directory")
    return root
