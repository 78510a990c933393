"""`t2iverw export BUILD --format pfcvr --out DIR`: any build in the authors' release layout.

DIR becomes a dataset root that the authors' code (PFCVR/datasets/v2iveri.py) trains and
tests on unchanged: pass its parent as their `root_dir` and its name as the dataset.

- the annotation JSON, named as the dataset's (T2I_VeRi_new: T2I-VeRW, T2I_VeRi: T2I-VeRI);
- `image/<image_id>.jpg` (an imported build keeps its release paths);
- one part file per image with parts, listing each part with any grid cell set;
- `mask`: the imported `mask`, else the union of the image's part grids; `prompt`: the
  imported prompt, else "" (the field is tokenised but used by no loss);
- the test side is written as split "val", as T2I-VeRW does (the loader then tests on it
  whichever of its val/test settings is chosen); an imported build keeps its values;
- with `augmented_copies`, `Darkimage/`, `Lightimage/`, `Noisyimage/`: the release's copies
  where the build has them, else made with t2iverw.release.augment's values.

A train image without captions or without any part grid would break their training loop
(it needs a non-empty part file); it is left out and listed in the manifest,
`t2iverw-export.json`, which also records the augmentation values.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from t2iverw.build import BuildDir
from t2iverw.constants import AUGMENTED, GRID, PARTS
from t2iverw.errors import T2IError
from t2iverw.grid import unpack_grid
from t2iverw.release import augment
from t2iverw.release.layout import ANNOTATIONS, augmented_path, part_file_json
from t2iverw.runner.columnar import latest_columns
from t2iverw.storage import atomic_path, check_replaceable, staged_dir, write_marker

BATCH_ROWS = 256  # rows whose records are read from the logs at once
STAGES = ("caption", "segment", "release")

MANIFEST = "t2iverw-export.json"
TEST_SPLIT = "val"


@dataclass
class PfcvrSummary:
    out: Path
    dataset: str
    records: dict[str, int]
    skipped: list[dict] = field(default_factory=list)
    augmented: dict | None = None

    def lines(self) -> list[str]:
        out = [f"wrote {self.records['train']} train and {self.records['test']} test records of {self.dataset} to "
               f"{self.out} ({ANNOTATIONS[self.dataset]})"]
        if self.skipped:
            out.append(f"left out {len(self.skipped)} train images its training loop cannot use (no caption or no "
                       f"part); see {MANIFEST}")
        if self.augmented:
            out.append(f"augmented copies: {self.augmented['from_release']} from the release, "
                       f"{self.augmented['made']} made (values in {MANIFEST})")
        return out


def export_pfcvr(build: str | Path | BuildDir, out: str | Path, *, dataset: str | None = None,
                 augmented_copies: bool = False) -> PfcvrSummary:
    """Write the build as the authors' dataset root `out` (see the module docstring)."""
    from t2iverw.export import caption_texts, check_consistency

    bd = build if isinstance(build, BuildDir) else BuildDir.open(build)
    out = Path(out)
    release = bd.info().get("release") or {}
    if release.get("format", "release") != "release":
        raise T2IError(f"{bd.root} is a {release['release']} build: --format pfcvr writes the vehicle release's "
                       "layout (part files, T2I_VeRi_new/); a person set is read by IRRA's own loaders as it was")
    dataset = dataset or release.get("release") or "T2I_VeRi_new"
    if dataset not in ANNOTATIONS:
        raise T2IError(f"unknown dataset {dataset!r}; the release format names {', '.join(ANNOTATIONS)}")
    check_replaceable(out, bd.root, MANIFEST, "`export --format pfcvr`")
    split = bd.split()
    # where each image's latest records lie, not the records: 416k of them would not fit; read per batch
    latest = {"caption": latest_columns(bd.root, "captions", {"image_sha256": _sha}).ok(),
              "segment": latest_columns(bd.root, "parts", {"image_sha256": _sha}).ok(),
              "release": latest_columns(bd.root, "release", {"order": lambda r: r.get("order")}).ok()}
    check_consistency(bd, split, {k: latest[k].table for k in ("caption", "segment")})
    rows = _ordered_rows(bd, split, latest)
    json_ids = _json_ids(sorted(pc.unique(rows["vehicle_id"]).to_pylist()))

    summary = PfcvrSummary(out, dataset, {"train": 0, "test": 0})
    made = Counter() if augmented_copies else None
    with staged_dir(out, "`t2iverw export --format pfcvr`") as tmp:
        with atomic_path(tmp / ANNOTATIONS[dataset]) as ann, ann.open("w", encoding="utf-8") as fh, \
                tqdm(total=rows.num_rows, desc="export pfcvr", unit="img") as bar:
            fh.write("[")  # the records one at a time, as json.dumps(list) writes them (compact: no line per grid cell)
            for batch in rows.to_batches(max_chunksize=BATCH_ROWS):
                recs = [latest[stage].fetch(batch[f"_{stage}"].to_pylist()) for stage in STAGES]
                for row, cap, part, rel in zip(batch.to_pylist(), *recs):
                    image_id, train = row["image_id"], row["_train"]
                    texts = caption_texts(cap) if cap else []
                    grids = np.stack([unpack_grid(h, GRID) for h in part["grid"]["cells"]]) \
                        if part else np.zeros((len(PARTS), *GRID), bool)
                    if train and (not texts or not grids.any()):
                        why = "no caption" if not texts else "no part"
                        summary.skipped.append({"image_id": image_id, "reason": why})
                        continue
                    record = _record(row, rel, json_ids[row["vehicle_id"]], train, texts, grids)
                    _write_files(bd, tmp, row, rel, record, grids, made)
                    fh.write((", " if sum(summary.records.values()) else "") + json.dumps(record))
                    summary.records["train" if train else "test"] += 1
                bar.update(batch.num_rows)
            fh.write("]")
        summary.augmented = augment.summary(made)
        write_marker(tmp, MANIFEST, {"format": "pfcvr", "build": str(bd.root.resolve()), "dataset": dataset,
                                    "records": summary.records, "skipped": summary.skipped,
                                    "augmented": summary.augmented, "test_split_value": TEST_SPLIT})
    return summary


def _sha(record: dict) -> str | None:
    return record.get("image_sha256")


def _ordered_rows(bd: BuildDir, split: dict, latest: dict) -> pa.Table:
    """The split's index rows in writing order, with `_train` and where each latest record lies (`_<stage>`).

    Imported records keep their release order; others go train first, then by (vehicle, image).
    """
    index = bd.images()
    train = pc.is_in(index["vehicle_id"], pa.array(split["train_ids"], pa.string()))
    listed = pc.or_(train, pc.is_in(index["vehicle_id"], pa.array(split["test_ids"], pa.string())))
    index = index.append_column("_train", train)
    for stage in STAGES:
        index = index.append_column(f"_{stage}", latest[stage].positions(index["image_id"]))
    index = index.filter(listed)
    order = latest["release"].column("order", index["_release"])
    ordered = pc.is_valid(order)
    # an ordered row sorts by its order alone (ties keep index order: the sort is stable); the others after
    keys = [pc.invert(ordered), order, pc.invert(index["_train"]), index["vehicle_id"], index["image_id"]]
    keys = keys[:2] + [pc.if_else(ordered, pa.scalar(None, k.type), k) for k in keys[2:]]
    for i, values in enumerate(keys):
        index = index.append_column(f"_k{i}", values)
    index = index.sort_by([(f"_k{i}", "ascending") for i in range(len(keys))])
    return index.drop_columns([f"_k{i}" for i in range(len(keys))])


def _json_ids(vehicle_ids: list[str]) -> dict[str, int | str]:
    """The `id` to write: an integer as the release has, or the digit string when an int would lose
    leading zeros (the loader's int() reads both alike). Two ids with one integer value would merge."""
    out, seen = {}, {}
    for v in vehicle_ids:
        if not v.isdigit():
            raise T2IError(f"vehicle id {v!r} is not made of digits; the authors' loader reads `id` with int()")
        other = seen.setdefault(int(v), v)
        if other != v:
            raise T2IError(f"vehicle ids {other!r} and {v!r} are the same integer; the authors' loader would merge them")
        out[v] = int(v) if str(int(v)) == v else v
    return out


def _record(row: dict, rel: dict | None, json_id, train: bool, texts: list[str], grids: np.ndarray) -> dict:
    image_id = row["image_id"]
    record = {"id": json_id,
              "split": rel["split"] if rel else ("train" if train else TEST_SPLIT),
              "file_path": rel["file_path"] if rel else f"image/{image_id}.jpg",
              "captions": texts}
    if grids.any():
        record["boxes"] = rel["boxes"] if rel and rel.get("boxes") else f"boxes/{image_id}.json"
    if train or (rel and rel.get("mask")):
        mask = unpack_grid(rel["mask"], GRID) if rel and rel.get("mask") else grids.any(axis=0)
        record["mask"] = mask.astype(int).tolist()
        record["prompt"] = rel["prompt"] if rel and rel.get("prompt") is not None else ""
    return record


def _write_files(bd: BuildDir, root: Path, row: dict, rel: dict | None, record: dict, grids: np.ndarray,
                 made: Counter | None) -> None:
    """The crop (bytes checked against the index), its part file and, when asked, its augmented copies."""
    data = bd.read_image(row)
    _write_bytes(root / record["file_path"], data)
    if "boxes" in record:  # a relative path with "/" (layout.relative_path normalised an imported one)
        _write_bytes(root / record["boxes"], json.dumps(part_file_json(grids)).encode())
    if made is None:
        return
    copies = augment.copies_for(bd, row, rel, made, data)
    for kind in AUGMENTED:
        _write_bytes(root / augmented_path(record["file_path"], kind), copies[kind])


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

