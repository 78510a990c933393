"""`t2iverw split`: the identity-disjoint train/test split (7:3 over identities, as in the paper).

Identities are ordered by a seed-keyed SHA-256 of their id, not by a library RNG whose
stream may change between versions, so a seed names the same split on any machine.
`--from` reuses a published split instead (ours, a release's, or VERI-Wild's test lists)
on whatever subset of it the build holds, and records how much of the file it lacks.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from t2iverw.build import BuildDir
from t2iverw.constants import DEFAULT_SEED, TEST_RATIO
from t2iverw.errors import T2IError
from t2iverw.index import keyed_hash
from t2iverw.storage import write_json


def make_split(
    build: str | Path,
    *,
    test_ratio: float = TEST_RATIO,
    seed: int = DEFAULT_SEED,
    from_file: str | Path | None = None,
    from_records: list[dict] | None = None,
) -> dict:
    """Write BUILD/split.json and return it.

    With `from_file`, the split is the published one, restricted to the identities this
    build holds; `seed` and `test_ratio` then play no part and are recorded as null, and
    `published` says how much of the file the build lacks. `from_records`: the `id`, `split`
    and `file_path` of that release file's records, already read (import-release has parsed it).
    """
    bd = BuildDir.open(build)
    images = bd.images(["vehicle_id", "image_id"]).to_pydict()
    images_per_id = Counter(images["vehicle_id"])
    ids = sorted(images_per_id)
    published = None
    if from_file is not None:
        published = read_published(Path(from_file), ids, images, from_records)
        test, method = published.pop("test"), f"from {Path(from_file).name}"
        seed, test_ratio = None, None
    else:
        if not 0 < test_ratio < 1:
            raise T2IError(f"--test-ratio must be between 0 and 1, got {test_ratio}")
        if len(ids) < 2:
            raise T2IError(f"need at least 2 identities to split, the build has {len(ids)}")
        n_test = min(len(ids) - 1, max(1, round(len(ids) * test_ratio)))
        test = set(sorted(ids, key=lambda v: keyed_hash(seed, "split", v))[:n_test])
        method = "sha256-keyed"
    train_ids = [v for v in ids if v not in test]
    test_ids = [v for v in ids if v in test]
    split = {
        "method": method,
        "seed": seed,
        "test_ratio": test_ratio,
        "counts": {
            "train": {"ids": len(train_ids), "images": sum(images_per_id[v] for v in train_ids)},
            "test": {"ids": len(test_ids), "images": sum(images_per_id[v] for v in test_ids)},
        },
        **({"published": published} if published is not None else {}),
        "train_ids": train_ids,
        "test_ids": test_ids,
    }
    write_json(bd.split_path, split)
    return split


def published_lines(split: dict) -> list[str]:
    """What a published split left out, for the CLI (never silent about a subset)."""
    pub = split.get("published")
    if not pub:
        return []
    lines = [f"{split['method']} ({pub['format']}): {pub['listed_ids']} identities listed"
             + (f", {pub['listed_images']} images" if pub["listed_images"] is not None else "")]
    lacks = [f"{pub['missing_ids']} of the listed identities"]
    if pub["missing_images"] is not None:
        lacks.append(f"{pub['missing_images']} of the listed images")
    lines.append("this build lacks " + " and ".join(lacks) + " (left out of the split)")
    if pub["unlisted_ids"]:
        lines.append(f"{pub['unlisted_ids']} identities of this build are not in the file; they are put in train")
    return lines


def read_published(path: Path, build_ids: list[str], images: dict, records: list[dict] | None = None) -> dict:
    """The published split on this build: test ids (build spelling) plus what the build lacks.

    Accepts our split.json, a release annotation JSON (a list of records with `id` and
    `split`; `val` is the test side when no record says `test`, as the authors' loader
    does), and VERI-Wild's lists (test_3000.txt ...: one `vid/imgid` or `vid` per line).
    Identities match exactly, or as integers when both are digits (a release stores 1
    for VERI-Wild's 00001); listed images match by image id (the `imgid` of a VERI-Wild
    list's `vid/imgid`, a release's file stem).
    """
    if records is not None:
        fmt, test, train, listed_images = ("release", *_release_split(records, path))
    elif not path.exists():
        raise T2IError(f"split file {path} not found")
    else:
        fmt, test, train, listed_images = _read_split_file(path)
    listed = test | (train or set())
    match = _id_matcher(build_ids, listed | {v for v, _ in listed_images or ()})
    test_in = {match[v] for v in test if v in match}
    train_in = None if train is None else {match[v] for v in train if v in match}
    both = sorted(test_in & (train_in or set()))
    if both:
        raise T2IError(f"{path}: vehicle id {both[0]} is in both train and test")
    if not test_in:
        raise T2IError(f"{path}: none of its {len(test)} test identities is in this build, so the split leaves no "
                       "identities for test")
    if test_in == set(build_ids):
        raise T2IError(f"{path}: the split leaves no identities for train in this build")
    missing_images = None
    if listed_images is not None:
        have = set(images["image_id"])  # a listed `vid/imgid` is in the build exactly when its imgid is
        missing_images = sum(1 for _, i in listed_images if i not in have)
    return {
        "test": test_in,
        "file": path.name,
        "format": fmt,
        "listed_ids": len(listed),
        "missing_ids": sum(1 for v in listed if v not in match),
        "listed_images": None if listed_images is None else len(listed_images),
        "missing_images": missing_images,
        "unlisted_ids": 0 if train is None else len(set(build_ids) - test_in - train_in),
    }


def _read_split_file(path: Path) -> tuple[str, set[str], set[str] | None, list[tuple[str, str]] | None]:
    """(format, test ids, train ids or None, listed (vid, image) pairs or None) as the file spells them."""
    if path.suffix != ".json":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        pairs = [tuple(line.split("/", 1)) for line in lines if "/" in line]
        pairs = [(v, i[: -len(".jpg")] if i.endswith(".jpg") else i) for v, i in pairs]
        return "id list", {line.split("/")[0] for line in lines}, None, pairs or None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise T2IError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, list):
        return ("release", *_release_split(data, path))
    try:
        return "split.json", {str(v) for v in data["test_ids"]}, {str(v) for v in data.get("train_ids", [])}, None
    except (KeyError, TypeError) as exc:
        raise T2IError(f"{path}: not a split.json with test_ids, nor a release annotation list ({exc})") from None


def _release_split(records: list, path: Path) -> tuple[set[str], set[str], list[tuple[str, str]]]:
    sides: dict[str, set[str]] = {"train": set(), "test": set(), "val": set()}
    pairs = []
    for n, rec in enumerate(records):
        if not isinstance(rec, dict) or "id" not in rec or "split" not in rec:
            raise T2IError(f"{path}: record {n} is not an object with 'id' and 'split'")
        vid = str(rec["id"])
        side = rec["split"] if rec["split"] in ("train", "test") else "val"
        sides[side].add(vid)
        if isinstance(rec.get("image_id"), str):  # a person-search record, its image id already made
            pairs.append((vid, rec["image_id"]))
        elif isinstance(rec.get("file_path"), str):
            pairs.append((vid, Path(rec["file_path"].replace("\\", "/")).stem))
    test = sides["test"] or sides["val"]
    return test, sides["train"], pairs


def _id_matcher(build_ids: list[str], listed: set[str]) -> dict[str, str]:
    """listed id -> build id, for the listed ids the build holds: exact, else as integers when both
    are digits and only one build id has that integer value."""
    exact = set(build_ids)
    by_int: dict[int, list[str]] = {}
    for v in build_ids:
        if v.isdigit():
            by_int.setdefault(int(v), []).append(v)
    match = {}
    for v in listed:
        if v in exact:
            match[v] = v
        elif v.isdigit() and len(by_int.get(int(v), ())) == 1:
            match[v] = by_int[int(v)][0]
    return match
