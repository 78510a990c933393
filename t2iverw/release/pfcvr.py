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
from tqdm import tqdm

from t2iverw.build import BuildDir
from t2iverw.constants import AUGMENTED, GRID, PARTS
from t2iverw.errors import T2IError
from t2iverw.grid import unpack_grid
from t2iverw.release import augment
from t2iverw.release.layout import ANNOTATIONS, augmented_path, part_file_json
from t2iverw.storage import check_replaceable, staged_dir, write_marker, write_text

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
    # only what is written and checked: full records (masks, settings) of 416k images would not fit
    captions, parts = bd.captions(("text", "texts", "image_sha256")), bd.parts(("grid", "image_sha256"))
    check_consistency(bd, split, {"caption": captions, "segment": parts})
    release = {k: r for k, r in bd.latest("release").items() if r.get("status") == "ok"}
    side = {v: name for name in ("train", "test") for v in split[f"{name}_ids"]}
    rows = [r for r in bd.images().to_pylist() if r["vehicle_id"] in side]
    rows.sort(key=lambda r: _order(r, side, release))
    json_ids = _json_ids(sorted({r["vehicle_id"] for r in rows}))

    summary = PfcvrSummary(out, dataset, {"train": 0, "test": 0})
    made = Counter() if augmented_copies else None
    records = []
    with staged_dir(out, "`t2iverw export --format pfcvr`") as tmp:
        for row in tqdm(rows, desc="export pfcvr", unit="img"):
            image_id, train = row["image_id"], side[row["vehicle_id"]] == "train"
            rel = release.get(image_id)
            texts = caption_texts(captions[image_id]) if image_id in captions else []
            grids = np.stack([unpack_grid(h, GRID) for h in parts[image_id]["grid"]["cells"]]) \
                if image_id in parts else np.zeros((len(PARTS), *GRID), bool)
            if train and (not texts or not grids.any()):
                summary.skipped.append({"image_id": image_id, "reason": "no caption" if not texts else "no part"})
                continue
            record = _record(row, rel, json_ids[row["vehicle_id"]], train, texts, grids)
            _write_files(bd, tmp, row, rel, record, grids, made)
            records.append(record)
            summary.records["train" if train else "test"] += 1
        write_text(tmp / ANNOTATIONS[dataset], json.dumps(records))  # compact: grids would take a line per cell
        summary.augmented = augment.summary(made)
        write_marker(tmp, MANIFEST, {"format": "pfcvr", "build": str(bd.root.resolve()), "dataset": dataset,
                                    "records": summary.records, "skipped": summary.skipped,
                                    "augmented": summary.augmented, "test_split_value": TEST_SPLIT})
    return summary


def _order(row: dict, side: dict, release: dict) -> tuple:
    """Imported records keep their release order; others go train first, then by (vehicle, image)."""
    rel = release.get(row["image_id"])
    if rel is not None and rel.get("order") is not None:
        return (0, rel["order"], "", "")
    return (1, side[row["vehicle_id"]] != "train", row["vehicle_id"], row["image_id"])


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

