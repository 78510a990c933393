"""Ground truth and predictions for `t2iverw eval`, checked strictly.

Protocol (text-to-image, `t2i`): every test caption is a query. An image's first
caption has the query id `caption_id` (== the image id); caption k > 0 of an image with
several (a release's `captions` list) is `<caption_id>#<k>`. Every test image is in the
gallery; a gallery image is correct when its vehicle id equals the query's. `i2t` swaps
the roles: test images query the gallery of test captions.

Order rule: queries and gallery are each sorted by id (Python string order). A score
matrix's rows and columns follow that order (`t2iverw eval --print-order` prints it)
unless --query-ids/--gallery-ids files give another; ties between equal scores are
broken by this gallery order. Sorting by id makes the order the same whether the
ground truth comes from an export (any number of shards) or a build directory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from t2iverw.build import IMAGES, BuildDir
from t2iverw.constants import caption_list, query_id
from t2iverw.errors import T2IError
from t2iverw.evaluation.metrics import PerQuery, list_metrics

DIRECTIONS = ("t2i", "i2t")
READ_BATCH = 4096  # test rows read at a time: a batch of caption text in memory, never the split's


@dataclass(frozen=True)
class GroundTruth:
    """Query and gallery ids in evaluation order, with the vehicle id of each."""

    direction: str
    query_ids: list[str]
    query_labels: np.ndarray
    gallery_ids: list[str]
    gallery_labels: np.ndarray


def ground_truth(dataset: str | Path, direction: str = "t2i") -> GroundTruth:
    """The test-split ground truth of an export (`data/test-*.parquet`) or a build directory."""
    if direction not in DIRECTIONS:
        raise T2IError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    images, captions = _test_split(Path(dataset))
    if not captions:
        raise T2IError(f"{dataset}: no test image has a caption, so there are no text queries; run `t2iverw caption`")
    queries, gallery = (captions, images) if direction == "t2i" else (images, captions)
    gt = GroundTruth(direction, *_side(queries), *_side(gallery))
    _check_positives(gt)
    return gt


def _test_split(dataset: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(test image id -> vehicle id, test caption id -> vehicle id)."""
    if (dataset / IMAGES).exists():
        return _build_test_split(BuildDir.open(dataset))
    if (dataset / "data").is_dir() and any((dataset / "data").glob("*.parquet")):
        return _export_test_split(dataset)
    raise T2IError(f"{dataset} is neither an export (no data/*.parquet) nor a build directory (no {IMAGES})")


def _export_test_split(dataset: Path) -> tuple[dict[str, str], dict[str, str]]:
    files = sorted((dataset / "data").glob("test-*.parquet"))
    if not files:
        raise T2IError(f"{dataset} has no test split (no data/test-*.parquet)")
    columns = ["image_id", "vehicle_id", "caption_id", "caption"]
    if "captions" in pq.read_schema(files[0]).names:  # exports before the `captions` column hold one caption
        columns.append("captions")
    rows: dict[str, list] = {"image_id": [], "vehicle_id": [], "caption_id": [], "count": []}
    try:  # reading only these columns never touches the image bytes; the captions' text never becomes Python
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=READ_BATCH, columns=columns):
                for name in ("image_id", "vehicle_id", "caption_id"):
                    rows[name] += batch.column(name).to_pylist()
                rows["count"] += caption_counts(batch).to_pylist()
    except (pa.ArrowInvalid, KeyError, OSError) as exc:
        raise T2IError(f"{dataset}: cannot read the test split ({exc})") from None
    images = _unique(rows["image_id"], rows["vehicle_id"], f"{dataset} test split", "image")
    return images, _queries(rows["caption_id"], rows["count"], rows["vehicle_id"], f"{dataset} test split")


def caption_counts(batch: pa.RecordBatch) -> pa.Array:
    """How many captions each row holds, as `len(caption_list(captions, caption))` counts them, in Arrow."""
    counts = pc.if_else(pc.is_null(batch.column("caption")), 0, 1)
    if "captions" in batch.schema.names:
        listed = pc.fill_null(pc.list_value_length(batch.column("captions")), 0).cast(pa.int64())
        counts = pc.if_else(pc.greater(listed, 0), listed, counts)
    return counts


def _build_test_split(bd: BuildDir) -> tuple[dict[str, str], dict[str, str]]:
    test_ids = set(bd.split()["test_ids"])
    rows = bd.images(["image_id", "vehicle_id"]).to_pydict()
    images = {i: v for i, v in zip(rows["image_id"], rows["vehicle_id"]) if v in test_ids}
    if not images:
        raise T2IError(f"{bd.root}: the split has no test images; re-run `t2iverw split`")
    ok = bd.captions()
    captioned = [i for i in images if i in ok]
    caption_ids = [ok[i].get("caption_id", i) for i in captioned]
    counts = [len(caption_list(ok[i].get("texts"), ok[i]["text"])) for i in captioned]
    return images, _queries(caption_ids, counts, [images[i] for i in captioned], f"{bd.root} captions")




def _queries(caption_ids: list[str], counts: list[int], labels: list[str], where: str) -> dict[str, str]:
    """query id -> vehicle id for every caption (`counts[i]` captions of the image with caption_ids[i])."""
    ids = [query_id(c, k) for c, n in zip(caption_ids, counts) for k in range(n)]
    return _unique(ids, [v for v, n in zip(labels, counts) for _ in range(n)], where, "caption")


def _unique(ids: list[str], labels: list[str], where: str, what: str) -> dict[str, str]:
    out = dict(zip(ids, labels))
    if len(out) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise T2IError(f"{where} lists {what} id {dup!r} more than once")
    return out


def _side(id_to_label: dict[str, str]) -> tuple[list[str], np.ndarray]:
    ids = sorted(id_to_label)
    return ids, np.array([id_to_label[i] for i in ids])


def _check_positives(gt: GroundTruth) -> None:
    present = set(gt.gallery_labels.tolist())
    for qid, label in zip(gt.query_ids, gt.query_labels.tolist()):
        if label not in present:
            raise T2IError(f"query {qid!r} (vehicle {label}) has no positive in the {gt.direction} gallery")


# --- explicit orders ---------------------------------------------------------
def read_ids(path: str | Path) -> list[str]:
    """Ids from a text file, one per line (blank lines ignored)."""
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise T2IError(f"cannot read ids from {path}: {exc.strerror}") from None


def reorder(gt: GroundTruth, query_ids: list[str] | None = None, gallery_ids: list[str] | None = None) -> GroundTruth:
    """`gt` with queries / gallery in the given orders, which must hold exactly the same ids."""
    if query_ids is not None:
        gt = replace(gt, query_ids=query_ids, query_labels=_relabel(gt.query_ids, gt.query_labels, query_ids, "query"))
    if gallery_ids is not None:
        gt = replace(gt, gallery_ids=gallery_ids,
                     gallery_labels=_relabel(gt.gallery_ids, gt.gallery_labels, gallery_ids, "gallery"))
    return gt


def _relabel(ids: list[str], labels: np.ndarray, order: list[str], what: str) -> np.ndarray:
    label_of = dict(zip(ids, labels.tolist()))
    seen: set[str] = set()
    for i in order:
        if i not in label_of:
            raise T2IError(f"--{what}-ids lists {i!r}, which is not a test {what} id")
        if i in seen:
            raise T2IError(f"--{what}-ids lists {i!r} twice")
        seen.add(i)
    missing = [i for i in ids if i not in seen]
    if missing:
        raise T2IError(f"--{what}-ids misses test {what} id {missing[0]!r} ({len(missing)} missing)")
    return np.array([label_of[i] for i in order])


# --- predictions -------------------------------------------------------------
def check_shape(scores: np.ndarray, gt: GroundTruth, name: str) -> None:
    expected = (len(gt.query_ids), len(gt.gallery_ids))
    if tuple(scores.shape) != expected:
        raise T2IError(f"{name} has shape {tuple(scores.shape)}, but the test split has {expected[0]} queries x "
                       f"{expected[1]} gallery items ({gt.direction}; see `t2iverw eval --print-order`)")


def ranking_metrics(ranks: object, gt: GroundTruth, name: str = "ranks") -> PerQuery:
    """Per-query results of `{query_id: [gallery_id, ...best first]}`; lists may be top-K."""
    if not isinstance(ranks, dict):
        raise T2IError(f"{name} must be a JSON object {{query_id: [gallery ids best first]}}, got {type(ranks).__name__}")
    query_set = set(gt.query_ids)
    extra = next((q for q in ranks if q not in query_set), None)
    if extra is not None:
        raise T2IError(f"{name} ranks {extra!r}, which is not a test query ({gt.direction})")
    missing = [q for q in gt.query_ids if q not in ranks]
    if missing:
        raise T2IError(f"{name} has no ranking for test query {missing[0]!r} ({len(missing)} of {len(gt.query_ids)} missing)")
    index = {g: i for i, g in enumerate(gt.gallery_ids)}
    pos_count = Counter(gt.gallery_labels.tolist())
    hits, depth = [], []
    for qid, label in zip(gt.query_ids, gt.query_labels):
        listed = _gallery_indices(ranks[qid], qid, index, name)
        hits.append(np.flatnonzero(gt.gallery_labels[listed] == label) + 1)
        depth.append(len(listed))
    n_pos = np.array([pos_count[label] for label in gt.query_labels.tolist()])
    return list_metrics(hits, n_pos, np.array(depth), len(gt.gallery_ids))


def _gallery_indices(listed: object, qid: str, index: dict[str, int], name: str) -> np.ndarray:
    if not isinstance(listed, list):
        raise T2IError(f"{name}: the ranking of query {qid!r} must be a list of gallery ids")
    try:
        out = np.array([index[g] for g in listed], dtype=np.int64)
    except (KeyError, TypeError):
        unknown = next(g for g in listed if not isinstance(g, str) or g not in index)
        raise T2IError(f"{name}: the ranking of query {qid!r} lists {unknown!r}, which is not a test gallery id") from None
    if len(np.unique(out)) != len(out):
        dup = next(g for g, n in Counter(listed).items() if n > 1)
        raise T2IError(f"{name}: the ranking of query {qid!r} lists {dup!r} more than once")
    return out
