"""`t2iverw split`: the identity-disjoint train/test split (7:3 over identities, as in the paper).

Identities are ordered by a seed-keyed SHA-256 of their id, not by a library RNG whose
stream may change between versions, so a seed names the same split on any machine.
`--from` reuses a published split instead.
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
) -> dict:
    """Write BUILD/split.json and return it."""
    bd = BuildDir.open(build)
    images_per_id = Counter(bd.images(["vehicle_id"]).column("vehicle_id").to_pylist())
    ids = sorted(images_per_id)
    if from_file is not None:
        test = _published_test_ids(Path(from_file), set(ids))
        method = f"from {Path(from_file).name}"
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
        "train_ids": train_ids,
        "test_ids": test_ids,
    }
    write_json(bd.split_path, split)
    return split


def _published_test_ids(path: Path, known: set[str]) -> set[str]:
    """Test ids from a split.json (ours) or a list of test images/ids, one `vid` or `vid/imgid` per line."""
    if not path.exists():
        raise T2IError(f"split file {path} not found")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
            test, train = set(data["test_ids"]), set(data.get("train_ids", []))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise T2IError(f"{path}: not a split.json with test_ids ({exc})") from None
        both = sorted(test & train)
        if both:
            raise T2IError(f"{path}: vehicle id {both[0]} is in both train and test")
    else:
        test = {line.strip().split("/")[0] for line in path.read_text().splitlines() if line.strip()}
    unknown = sorted(test - known)
    if unknown:
        raise T2IError(f"{path}: test vehicle id {unknown[0]} is not in the build ({len(unknown)} unknown)")
    if not test or test == known:
        raise T2IError(f"{path}: the split leaves {'no' if not test else 'all'} identities for test")
    return test
