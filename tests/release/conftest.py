"""Test-side tools for the release format, written from its description (shared/pfcvr-code.md
section 1) and the authors' loader, sharing no code with t2iverw.release:

- `release_writer`: writes a small T2I-VeRW-style release (what `import-release` reads);
- `release_checker`: checks a release against the rules the authors' loader applies
  (what `export --format pfcvr` must satisfy).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

CATEGORIES = ("windows", "lights", "wheels", "mirrors", "roof", "doors")
ANNOTATION_FILES = {"T2I_VeRi_new": "reid_with_mask_prompt_and_boxes_filepath_prefixid_idsplit_70_30.json",
                    "T2I_VeRi": "reid_with_mask_prompt_and_boxes_filepath_refixID.json"}
COPIES = {"dark": "Darkimage/dark_", "light": "Lightimage/light_", "noisy": "Noisyimage/noisy_"}
SIDE = 24


def _grid(rng: random.Random, density: float) -> list[list[int]]:
    return [[int(rng.random() < density) for _ in range(SIDE)] for _ in range(SIDE)]


def write_release(root: Path, *, ids: int = 6, per_id: tuple[int, int] = (2, 3), name: str = "T2I_VeRi_new",
                  seed: int = 0, copies: bool = True, captions_per_image: int = 1) -> dict:
    """Write a release under `root`; returns {"records": [...], "parts": {file_path: {category: grid}}}.

    Vehicles with an index divisible by 3 are on the "val" side (T2I-VeRW has no "test").
    Part files name some categories twice (their grids are to be OR-merged), carry a
    score, and their `boxes` paths use backslashes on every other record.
    """
    rng = random.Random(seed)
    records, parts = [], {}
    for v in range(ids):
        vid = 100 + 7 * v
        split = "val" if v % 3 == 0 else "train"
        colour = tuple(rng.randrange(256) for _ in range(3))
        for k in range(rng.randint(*per_id)):
            stem = f"{vid}_{len(records) + 1:06d}"  # "prefixid": the vehicle id, then a unique image id
            file_path = f"image/{stem}.jpg"
            image = Image.new("RGB", (rng.randint(40, 90), rng.randint(30, 60)), colour)
            (root / "image").mkdir(parents=True, exist_ok=True)
            image.save(root / file_path, "JPEG", quality=90)
            if copies:
                for prefix in COPIES.values():
                    target = root / file_path.replace("image/", prefix)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    image.save(target, "JPEG", quality=80)
            instances, merged = [], {}
            for category in rng.sample(CATEGORIES, rng.randint(1, 6)):
                for _ in range(rng.choice((1, 1, 2))):  # sometimes the same category twice
                    grid = _grid(rng, 0.15)
                    instances.append({"category": category, "mask": grid, "score": round(rng.random(), 3)})
                    old = merged.get(category)
                    merged[category] = grid if old is None else [
                        [a | b for a, b in zip(r1, r2)] for r1, r2 in zip(old, grid)]
            boxes = f"boxes\\{stem}.json" if len(records) % 2 else f"boxes/{stem}.json"
            (root / "boxes").mkdir(parents=True, exist_ok=True)
            (root / "boxes" / f"{stem}.json").write_text(json.dumps(instances))
            parts[file_path] = merged
            record = {"id": vid, "split": split, "file_path": file_path,
                      "captions": [f"A vehicle {vid}, view {k}, caption {c}." for c in range(captions_per_image)],
                      "boxes": boxes}
            if split == "train":
                record |= {"mask": _grid(rng, 0.3), "prompt": f"a photo of vehicle {vid}"}
            records.append(record)
    (root / ANNOTATION_FILES[name]).write_text(json.dumps(records))
    return {"records": records, "parts": parts}


def check_release(root: Path, name: str = "T2I_VeRi_new") -> list[str]:
    """Problems the authors' loader would hit on the release at `root` (empty when none).

    It walks the records as T2IVeRi._split_anno / _process_anno and get_box do.
    """
    problems: list[str] = []
    path = root / ANNOTATION_FILES[name]
    if not path.is_file():
        return [f"no annotation file {path.name}"]
    annos = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(annos, list):
        return ["the annotation file is not a list"]
    train = [a for a in annos if a.get("split") == "train"]
    test = [a for a in annos if a.get("split") == "test"] or [a for a in annos if a.get("split") not in ("train", "test")]
    if not train or not test:
        problems.append("no train records or no test/val records")
    seen = set()
    for n, anno in enumerate(annos):
        where = f"record {n}"
        if not isinstance(anno, dict):
            problems.append(f"{where} is not an object")
            continue
        try:
            int(anno["id"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{where}: id {anno.get('id')!r} fails int()")
        if not isinstance(anno.get("split"), str):
            problems.append(f"{where}: split is not a string")
        fp = anno.get("file_path")
        if not isinstance(fp, str) or not fp.startswith("image/") or Path(fp).is_absolute():
            problems.append(f"{where}: file_path {fp!r} is not a relative image/ path")
            continue
        if fp in seen:
            problems.append(f"{where}: duplicate file_path {fp}")
        seen.add(fp)
        if not (root / fp).is_file():
            problems.append(f"{where}: {fp} does not exist")
        caps = anno.get("captions")
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            problems.append(f"{where}: captions is not a list of strings")
        if anno.get("split") != "train":
            continue
        if not caps:
            problems.append(f"{where}: a train record without captions trains on nothing")
        for field in ("boxes", "mask", "prompt"):
            if field not in anno:
                problems.append(f"{where}: train record without {field!r}")
        if not isinstance(anno.get("prompt", ""), str):
            problems.append(f"{where}: prompt is not a string")
        problems += [f"{where}: mask {p}" for p in _grid_problems(anno.get("mask"))]
        boxes = anno.get("boxes")
        if not isinstance(boxes, str):
            continue
        part_path = root / boxes.replace("\\", "/")
        if not part_path.is_file():
            problems.append(f"{where}: part file {boxes} does not exist")
            continue
        boxes_json = json.loads(part_path.read_text(encoding="utf8"))
        if not isinstance(boxes_json, list) or not boxes_json:
            problems.append(f"{where}: part file {boxes} is empty or not a list")
            continue
        for inst in boxes_json:
            if "Car " + str(inst.get("category")) not in {"Car " + c for c in CATEGORIES}:
                problems.append(f"{where}: part category {inst.get('category')!r}")
            problems += [f"{where}: part mask {p}" for p in _grid_problems(inst.get("mask"))]
        for kind, prefix in COPIES.items():
            if (root / prefix.split("/")[0]).is_dir() and not (root / fp.replace("image/", prefix)).is_file():
                problems.append(f"{where}: no {kind} copy at {fp.replace('image/', prefix)}")
    return problems


def _grid_problems(grid) -> list[str]:
    if not isinstance(grid, list) or len(grid) != SIDE or any(not isinstance(r, list) or len(r) != SIDE for r in grid):
        return ["is not 24x24"]
    if any(type(c) is not int or c not in (0, 1) for r in grid for c in r):
        return ["is not made of the integers 0 and 1"]
    return []


@pytest.fixture(scope="session")
def release_writer():
    return write_release


@pytest.fixture(scope="session")
def release_checker():
    return check_release
