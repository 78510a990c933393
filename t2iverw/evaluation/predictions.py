"""Reading prediction files for `t2iverw eval`: ranks.json in its three forms, and score matrices.

ranks.json may be
- an object `{query_id: [gallery ids, best first]}`;
- a list of rankings, one per query in the order of `--query-ids` (for example the
  authors' caption order, as `import-release` writes it);
- either of them wrapped as `{"meta": {...}, "ranks": ...}`, which `t2iverw predict` writes.
Entries of a ranking are gallery ids, or integer indices into the order of `--gallery-ids`.
A score matrix is a .npy, or a .npz whose `scores` array (or only array) holds it and
whose optional `meta` entry is a 0-d string array holding the same JSON `meta` object.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from t2iverw.errors import T2IError

WRAPPED = {"meta", "ranks"}


def read_ranks(path: str | Path) -> tuple[object, dict]:
    """(the rankings as parsed, meta) of a ranks.json; meta is {} unless the file is wrapped."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=lambda pairs: _unique(pairs, path))
    except json.JSONDecodeError as exc:
        raise T2IError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise T2IError(f"cannot read {path}: {exc}") from None
    return unwrap(data, str(path))


def _unique(pairs: list[tuple[str, object]], path) -> dict:
    """A JSON object whose keys are all distinct: json keeps the last of a repeated key, which would
    silently drop a query's first ranking."""
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise T2IError(f"{path} lists {key!r} twice (a query ranked twice?)")
        found[key] = value
    return found


def unwrap(data: object, name: str) -> tuple[object, dict]:
    """Split a wrapped `{"meta": {...}, "ranks": ...}` into (ranks, meta); anything else is (data, {})."""
    if isinstance(data, dict) and set(data) == WRAPPED:
        if not isinstance(data["meta"], dict):
            raise T2IError(f"{name}: 'meta' must be a JSON object, got {type(data['meta']).__name__}")
        return data["ranks"], data["meta"]
    return data, {}


def resolve_ranks(ranks: object, name: str, query_ids: list[str] | None = None,
                  gallery_ids: list[str] | None = None) -> dict:
    """`{query_id: [gallery ids]}` from any accepted form; integer entries index `gallery_ids`."""
    if isinstance(ranks, list):
        if query_ids is None:
            raise T2IError(f"{name} is a list of rankings: give --query-ids, the query of each ranking in order")
        dup = next((q for q, n in Counter(query_ids).items() if n > 1), None)
        if dup is not None:
            raise T2IError(f"--query-ids lists {dup!r} twice")
        if len(ranks) != len(query_ids):
            raise T2IError(f"{name} holds {len(ranks)} rankings but --query-ids names {len(query_ids)} queries")
        ranks = dict(zip(query_ids, ranks))
    elif isinstance(ranks, dict):
        if query_ids is not None:
            raise T2IError(f"{name} is an object that names its queries; --query-ids orders a list of rankings")
    else:
        raise T2IError(f"{name} must be a JSON object {{query_id: [gallery ids best first]}} or a list of "
                       f"rankings in --query-ids order, got {type(ranks).__name__}")
    return {q: _gallery_entries(listed, q, name, gallery_ids) for q, listed in ranks.items()}


def _gallery_entries(listed: object, qid: str, name: str, gallery_ids: list[str] | None) -> object:
    """Integer entries mapped through `gallery_ids`; anything else is left for the ground-truth checks."""
    if not isinstance(listed, list) or not any(_is_index(g) for g in listed):
        return listed
    if gallery_ids is None:
        raise T2IError(f"{name}: the ranking of query {qid!r} lists integer indices; give --gallery-ids, "
                       "the gallery order they index")
    out = []
    for g in listed:
        if _is_index(g):
            if not 0 <= g < len(gallery_ids):
                raise T2IError(f"{name}: the ranking of query {qid!r} lists index {g}, outside --gallery-ids "
                               f"(0..{len(gallery_ids) - 1})")
            g = gallery_ids[g]
        out.append(g)
    return out


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_scores(path: str | Path) -> tuple[np.ndarray, dict]:
    """(queries x gallery score matrix, meta) from .npy (memory-mapped) or .npz, never unpickling."""
    path = Path(path)
    meta: dict = {}
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = [n for n in archive.files if n != "meta"]
                if "scores" not in names and len(names) != 1:
                    raise T2IError(f"{path} holds arrays {names}; name the score matrix 'scores'")
                scores = archive["scores" if "scores" in names else names[0]]
                if "meta" in archive.files:
                    meta = _npz_meta(archive["meta"], path)
        elif path.suffix == ".npy":
            scores = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            raise T2IError(f"{path}: scores must be a .npy or .npz file")
    except (ValueError, OSError, EOFError) as exc:
        raise T2IError(f"cannot load scores from {path}: {exc}") from None
    if scores.ndim != 2:
        raise T2IError(f"{path} holds a {scores.ndim}-d array, expected a queries x gallery matrix")
    return scores, meta


def _npz_meta(entry: np.ndarray, path: Path) -> dict:
    if entry.ndim != 0 or entry.dtype.kind != "U":
        raise T2IError(f"{path}: 'meta' must be a 0-d string array holding JSON, got {entry.dtype} of shape {entry.shape}")
    try:
        meta = json.loads(str(entry[()]))
    except json.JSONDecodeError as exc:
        raise T2IError(f"{path}: 'meta' is not valid JSON: {exc.msg}") from None
    if not isinstance(meta, dict):
        raise T2IError(f"{path}: 'meta' must hold a JSON object, got {type(meta).__name__}")
    return meta
