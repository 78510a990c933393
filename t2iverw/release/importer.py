"""`t2iverw import-release ROOT --out BUILD`: the official release as an ordinary build directory.

The release (one annotation JSON, `image/` crops, one part file per image; see layout.py)
becomes what `index`, `caption`, `segment` and `split` would have written, so every later
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

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from t2iverw.errors import T2IError
from t2iverw.release.layout import TEST, TRAIN, BadRecord, Record, augmented_path, check_record, read_part_file

QUERY_ORDER = "release_query_ids.txt"
GALLERY_ORDER = "release_gallery_ids.txt"


@dataclass
class Checked:
    """Records that passed every check, their part grids, and the rejected ones."""

    records: list[Record] = field(default_factory=list)
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # image_id -> (6, 24, 24) bool
    rejected: list[dict] = field(default_factory=list)


def check_records(root: Path, raw: list) -> Checked:
    """Check each record and its part file; the first record wins a duplicate file_path or image id."""
    out = Checked()
    paths: set[str] = set()
    image_ids: set[str] = set()
    for index, item in enumerate(raw):
        try:
            rec = check_record(item, index)
            if rec.file_path in paths:
                raise BadRecord(f"record {index}: duplicate file_path {rec.file_path}")
            if rec.image_id in image_ids:
                raise BadRecord(f"record {index}: duplicate image id {rec.image_id} (file stem of {rec.file_path})")
            grids = None
            if rec.boxes is not None:
                grids = read_part_file(root / rec.boxes, f"record {index}")
                if rec.split == TRAIN and not grids.any():
                    raise BadRecord(f"record {index}: the part file {rec.boxes} of a train record names no part")
        except BadRecord as exc:
            file_path = item.get("file_path") if isinstance(item, dict) else None
            out.rejected.append({"record": index, "file_path": file_path, "reason": str(exc)})
            continue
        paths.add(rec.file_path)
        image_ids.add(rec.image_id)
        out.records.append(rec)
        if grids is not None:
            out.grids[rec.image_id] = grids
    return out


def augmented_copies(root: Path, rec: Record) -> dict[str, str] | None:
    """The release's dark/light/noisy copies of a record, when all three exist."""
    found = {kind: augmented_path(rec.file_path, kind) for kind in ("dark", "light", "noisy")}
    return found if all((root / p).is_file() for p in found.values()) else None


def test_side(records: list[Record]) -> str:
    """Which split value is the test set: "test", or anything but train when no record says test."""
    return TEST if any(r.split == TEST for r in records) else "val"


def loader_orders(records: list[Record], image_ids: set[str]) -> tuple[list[str], list[str]]:
    """(query ids, gallery ids) in the authors' loader order: test records in JSON order, their
    captions in list order; only records that were imported."""
    from t2iverw.evaluation.inputs import query_id

    test = [r for r in records if r.image_id in image_ids and _is_test(r, records)]
    queries = [query_id(r.image_id, k) for r in test for k in range(len(r.captions))]
    return queries, [r.image_id for r in test]


def _is_test(rec: Record, records: list[Record]) -> bool:
    side = test_side(records)
    return rec.split == TEST if side == TEST else rec.split != TRAIN


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
        for key in ("camera_id", "time", "model", "type", "color"):
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
