"""The release format, as the authors' loader (PFCVR/datasets/v2iveri.py, bases.py) reads it.

A dataset root holds one annotation JSON (its name depends on the dataset), `image/...`
crops, one part file per image, and optionally `Darkimage/`, `Lightimage/`, `Noisyimage/`.
The annotation file is a list of records:

    id         vehicle identity; the loader reads it with int()
    split      "train", "test", or anything else (validation; the test set when no record is "test")
    file_path  the crop, relative to the root (`image/...`); its stem is the image id
    captions   list of strings; each one is a query at test time
    boxes      relative path of the part file (backslashes mean /); needed on train records
    mask       24x24 grid of 0/1: cells the masked-image modelling masks first (train)
    prompt     string (train); tokenised, used by no loss

A part file is a list of `{"category": one of the six parts, "mask": 24x24 0/1, "score"?}`;
a category may repeat (its grids are OR-merged) and absent parts are omitted. The
augmented copies are found by replacing `image/` in `file_path` (every occurrence, as
str.replace does) with `Darkimage/dark_`, `Lightimage/light_`, `Noisyimage/noisy_`.
See shared/pfcvr-code.md section 1.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ijson
import numpy as np
import orjson

from t2iverw.constants import AUGMENTED, GRID, ID_RULE, MAX_CAPTION_CHARS, PARTS, is_id
from t2iverw.errors import T2IError

ANNOTATIONS = {  # dataset folder name -> its annotation file
    "T2I_VeRi_new": "reid_with_mask_prompt_and_boxes_filepath_prefixid_idsplit_70_30.json",  # T2I-VeRW
    "T2I_VeRi": "reid_with_mask_prompt_and_boxes_filepath_refixID.json",  # T2I-VeRI
}
IMAGE_DIR = "image/"
AUGMENTED_DIRS = dict(zip(AUGMENTED, ("Darkimage/dark_", "Lightimage/light_", "Noisyimage/noisy_")))
TRAIN, TEST, VAL = "train", "test", "val"


class BadRecord(ValueError):
    """A release record (or its part file) that the authors' code could not use; the reason says why."""


@dataclass(frozen=True)
class Record:
    """One checked annotation record, in our terms."""

    index: int  # position in the annotation list (the authors' loader order)
    image_id: str  # the file stem
    vehicle_id: str
    split: str
    file_path: str
    captions: list[str]
    boxes: str | None
    mask: np.ndarray | None  # (24, 24) bool
    prompt: str | None


def find_annotations(root: Path) -> tuple[str, Path]:
    """(dataset name, annotation file) of a release root."""
    if not root.is_dir():
        raise T2IError(f"release root {root} does not exist or is not a directory")
    found = [(name, root / file) for name, file in ANNOTATIONS.items() if (root / file).is_file()]
    if not found:
        names = " or ".join(ANNOTATIONS.values())
        raise T2IError(f"{root} holds no release annotation file (expected {names})")
    if len(found) > 1:
        raise T2IError(f"{root} holds both {found[0][1].name} and {found[1][1].name}; keep one dataset per root")
    return found[0]


def read_annotations(path: Path) -> Iterator[object]:
    """The records of an annotation list one at a time, parsed by ijson as the file is read: a
    416k-record release (a 24x24 grid in most records) is never whole in memory."""
    with path.open("rb") as fh:
        first = fh.read(1)
        while first.isspace():
            first = fh.read(1)
        if first != b"[":
            kind = {b"{": "an object", b"": "nothing"}.get(first, "something else")
            raise T2IError(f"{path} must hold a JSON list of records, got {kind}")
        fh.seek(0)
        try:
            yield from ijson.items(fh, "item", use_float=True)
        except ijson.JSONError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            at = f" (near byte {fh.tell():,})"
            if "UTF8" in reason or "UTF-8" in reason:
                raise T2IError(f"{path} is not UTF-8{at}") from None
            raise T2IError(f"{path} is not valid JSON: {reason}{at}") from None


def check_record(rec: object, index: int) -> Record:
    """The record's fields, checked as the authors' loader uses them."""
    if not isinstance(rec, dict):
        raise BadRecord(f"record {index} is a {type(rec).__name__}, not an object")
    missing = [f for f in ("id", "split", "file_path", "captions") if f not in rec]
    if missing:
        raise BadRecord(f"record {index} has no {missing[0]!r}")
    vehicle = rec["id"]
    if isinstance(vehicle, bool) or not (isinstance(vehicle, int) or (isinstance(vehicle, str) and vehicle.isdigit())):
        raise BadRecord(f"record {index}: id {vehicle!r} is not an integer (the loader reads it with int())")
    split = rec["split"]
    if not isinstance(split, str):
        raise BadRecord(f"record {index}: split {split!r} is not a string")
    file_path = relative_path(rec["file_path"], f"record {index}: file_path")
    captions = check_captions(rec["captions"], split, index)
    boxes = rec.get("boxes")
    if boxes is not None:
        boxes = relative_path(boxes, f"record {index}: boxes")
    elif split == TRAIN:
        raise BadRecord(f"record {index} is a train record without 'boxes' (its part file)")
    mask = rec.get("mask")
    mask = None if mask is None else grid(mask, f"record {index}: mask")
    prompt = rec.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadRecord(f"record {index}: prompt must be a string")
    image_id = posixpath.splitext(posixpath.basename(file_path))[0]
    if not is_id(image_id):  # as `index` refuses it: the id would name export files and sit in every page
        raise BadRecord(f"record {index}: image id {image_id[:80]!r} (the file stem of file_path) is not of {ID_RULE}")
    return Record(index, image_id, str(vehicle), split, file_path, captions, boxes, mask, prompt)


def relative_path(value: object, what: str) -> str:
    """A path relative to the root, `/`-separated (backslashes mean `/`), never leaving the root."""
    if not isinstance(value, str) or not value:
        raise BadRecord(f"{what} must be a non-empty string")
    path = value.replace("\\", "/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts or not parts:
        raise BadRecord(f"{what} {value!r} is not a path inside the release root")
    return "/".join(parts)


def inside(root: Path, relative: str) -> bool:
    """Whether `root/relative`, symlinks followed, is still under `root` (a link may point anywhere).

    The folder's real path is looked up once per folder (a release has a few thousand folders
    and 416k files); the file itself is followed only when it is a link."""
    real_root = _realpath(str(root))
    folder, name = os.path.split(os.path.join(real_root, relative))
    target = os.path.join(_realpath(folder), name)
    if os.path.islink(target):
        target = os.path.realpath(target)
    return target == real_root or target.startswith(real_root + os.sep)


@functools.lru_cache(maxsize=65536)
def _realpath(path: str) -> str:
    return os.path.realpath(path)


def grid(value: object, what: str) -> np.ndarray:
    """A 24x24 list of lists of 0/1 as a bool array."""
    cells = grid_cells(value)
    if cells is not None:
        return np.frombuffer(cells, np.uint8).reshape(GRID).astype(bool)
    if not isinstance(value, list) or len(value) != GRID[0] or not all(
            isinstance(row, list) and len(row) == GRID[1] for row in value):
        raise BadRecord(f"{what} is not a {GRID[0]}x{GRID[1]} grid")
    try:
        cells = np.array(value)
    except (ValueError, TypeError):
        raise BadRecord(f"{what} is not a {GRID[0]}x{GRID[1]} grid") from None
    if cells.dtype.kind not in "iub" or cells.min() < 0 or cells.max() > 1:
        raise BadRecord(f"{what} is not binary (cells must be 0 or 1)")
    return cells.astype(bool)


def grid_cells(value: object) -> bytes | None:
    """A well-formed 24x24 grid of 0/1 as its 576 cells, one byte each, or None (grid() then says
    what is wrong). bytes() turns a row of small ints into bytes in C, where numpy on nested
    lists is the slowest step of an import; it refuses floats, strings and lists, as grid() does."""
    if not (type(value) is list and len(value) == GRID[0] and set(map(type, value)) == {list}
            and set(map(len, value)) == {GRID[1]}):
        return None
    try:
        cells = b"".join(map(bytes, value))
    except (TypeError, ValueError):  # not an int, or one outside 0..255
        return None
    return None if cells.translate(None, b"\0\1") else cells


def read_part_file(path: Path, what: str) -> np.ndarray:
    """(6, 24, 24) bool grids in part order from one part file; a repeated category is OR-merged.

    orjson parses it (several times quicker than json on 3,456 cells); a file that orjson
    refuses, or whose content is rejected, is judged again as json reads it, so every reason
    stays json's and what only json accepts (NaN, huge integers, lone surrogates) reads as before."""
    try:
        return _part_grids(orjson.loads(path.read_bytes()), path, what)
    except (orjson.JSONDecodeError, OSError, BadRecord):
        pass
    try:
        instances = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadRecord(f"{what}: part file {path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise BadRecord(f"{what}: part file {path.name} is unreadable ({exc})") from None
    return _part_grids(instances, path, what)


def _part_grids(instances: object, path: Path, what: str) -> np.ndarray:
    """The grids of a parsed part file, or BadRecord with the first thing wrong in it."""
    if not isinstance(instances, list):
        raise BadRecord(f"{what}: part file {path.name} is not a list of instances")
    for n, inst in enumerate(instances):
        if not isinstance(inst, dict) or "category" not in inst or "mask" not in inst:
            raise BadRecord(f"{what}: instance {n} of {path.name} has no 'category' and 'mask'")
        if inst["category"] not in PARTS:
            raise BadRecord(f"{what}: instance {n} of {path.name} has category {inst['category']!r}, "
                            f"not one of {', '.join(PARTS)}")
    grids = np.zeros((len(PARTS), GRID[0] * GRID[1]), np.uint8)
    for n, inst in enumerate(instances):
        cells = grid_cells(inst["mask"])
        if cells is None:  # grid() raises with the reason
            cells = grid(inst["mask"], f"{what}: mask of instance {n} of {path.name}").tobytes()
        grids[PARTS.index(inst["category"])] |= np.frombuffer(cells, np.uint8)
    return grids.reshape(len(PARTS), *GRID).astype(bool)


def augmented_path(file_path: str, kind: str) -> str:
    """Where the release keeps the `kind` copy of an image (the loader's str.replace rule)."""
    return file_path.replace(IMAGE_DIR, AUGMENTED_DIRS[kind])


def part_file_json(grids: np.ndarray) -> list[dict]:
    """A part file's content: one instance per part with any cell set, in part order."""
    return [{"category": part, "mask": g.astype(int).tolist()} for part, g in zip(PARTS, grids) if g.any()]


def check_captions(captions: object, split: str, index: int) -> list[str]:
    """A record's captions as every annotation format needs them: strings, none over
    MAX_CAPTION_CHARS, at least one on a train record."""
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise BadRecord(f"record {index}: captions must be a list of strings")
    too_long = next((k for k, c in enumerate(captions) if len(c) > MAX_CAPTION_CHARS), None)
    if too_long is not None:
        raise BadRecord(f"record {index}: caption {too_long} is {len(captions[too_long]):,} characters, over the "
                        f"{MAX_CAPTION_CHARS:,} a caption may have")
    if split == TRAIN and not captions:
        raise BadRecord(f"record {index} is a train record with no caption (nothing to train on)")
    return captions
