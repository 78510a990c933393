"""The person-search annotation files, as IRRA's readers (datasets/cuhkpedes.py, icfgpedes.py,
rstpreid.py) read them, so that each model can be checked on its home benchmark.

A dataset root (IRRA's `<root>/<Name>/`) holds one annotation JSON and `imgs/`:

    CUHK-PEDES  reid_raw.json       {"id", "file_path", "captions", "split", "processed_tokens"}
    ICFG-PEDES  ICFG-PEDES.json     {"id", "file_path", "captions", "split", "processed_tokens"}
    RSTPReid    data_captions.json  {"id", "img_path", "captions", "split"}

Paths are relative to `imgs/`. `split == "train"` is train, `"test"` is test and anything
else is validation (IRRA's `_split_anno`); a build holds train and test, so validation
records are left out and counted. The identity is the record's `id` as written (IRRA
subtracts 1 on CUHK-PEDES for its training labels only; test ids stay raw, as here).

Images of different source sets share file stems (CUHK-PEDES gathers CUHK01, CUHK03,
Market, SSM, VIPER), so an image id is the whole path below `imgs/`, its folders joined
by `__` and any character outside `[A-Za-z0-9_-]` made `-`.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from t2iverw.errors import T2IError
from t2iverw.release.layout import BadRecord, Record, check_captions, relative_path

IMAGE_DIR = "imgs"


@dataclass(frozen=True)
class PersonFormat:
    name: str  # the --format value
    dataset: str  # the dataset's own name (IRRA's dataset_dir)
    annotations: str
    path_field: str


FORMATS = {f.name: f for f in (
    PersonFormat("cuhk-pedes", "CUHK-PEDES", "reid_raw.json", "file_path"),
    PersonFormat("icfg-pedes", "ICFG-PEDES", "ICFG-PEDES.json", "file_path"),
    PersonFormat("rstpreid", "RSTPReid", "data_captions.json", "img_path"),
)}


def detect(root: Path) -> PersonFormat | None:
    """The person-search format whose annotation file `root` holds, if any."""
    found = [f for f in FORMATS.values() if (root / f.annotations).is_file()]
    if len(found) > 1:
        raise T2IError(f"{root} holds both {found[0].annotations} and {found[1].annotations}; keep one dataset per root")
    return found[0] if found else None


def annotations_of(root: Path, fmt: PersonFormat) -> Path:
    path = root / fmt.annotations
    if not path.is_file():
        raise T2IError(f"{root} holds no {fmt.annotations} (the {fmt.dataset} annotation file)")
    return path


def image_id(path_in_imgs: str) -> str:
    """The build's image id of an image at `imgs/<path_in_imgs>` (see the module docstring)."""
    stem = posixpath.splitext(path_in_imgs)[0]
    return "__".join(re.sub(r"[^A-Za-z0-9_-]", "-", part) for part in stem.split("/"))


def check_person_record(fmt: PersonFormat, rec: object, index: int) -> Record:
    """One annotation record, checked as IRRA's reader uses it."""
    if not isinstance(rec, dict):
        raise BadRecord(f"record {index} is a {type(rec).__name__}, not an object")
    missing = [f for f in ("id", fmt.path_field, "captions", "split") if f not in rec]
    if missing:
        raise BadRecord(f"record {index} has no {missing[0]!r}")
    person = rec["id"]
    if isinstance(person, bool) or not (isinstance(person, int) or (isinstance(person, str) and person.isdigit())):
        raise BadRecord(f"record {index}: id {person!r} is not an integer (IRRA reads it with int())")
    split = rec["split"]
    if not isinstance(split, str):
        raise BadRecord(f"record {index}: split {split!r} is not a string")
    below = relative_path(rec[fmt.path_field], f"record {index}: {fmt.path_field}")
    captions = check_captions(rec["captions"], split, index)
    return Record(index, image_id(below), str(int(person)), split, f"{IMAGE_DIR}/{below}", captions,
                  boxes=None, mask=None, prompt=None)


def published_entry(fmt: PersonFormat, rec: object) -> dict | None:
    """The id, split and image id of a raw record, for the published split (None when it has none)."""
    if not (isinstance(rec, dict) and "id" in rec and isinstance(rec.get("split"), str)):
        return None
    path = rec.get(fmt.path_field)
    return {"id": rec["id"], "split": rec["split"], "image_id": image_id(path.replace("\\", "/")) if isinstance(
        path, str) else None}
