"""Exact Rank-k, mAP and mINP, computed by counting instead of sorting.

Ranking rule: a gallery item ranks ahead of another when its score is higher, or when
the scores are equal and its gallery index is smaller (a stable sort by descending
score). So the rank of a positive p is

    1 + #{gallery j: s_j > s_p} + #{gallery j < p: s_j == s_p}

and the numbers never depend on a sort algorithm. Only the positives' ranks matter, so
no row is ever sorted: `counting.block_ranks` counts, in compiled code, how many items
score above each positive, reading each row from memory once whatever the scores look
like. Rows are read a block at a time, so a memory-mapped matrix larger than RAM works,
and no queries x gallery index array is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from t2iverw.errors import T2IError
from t2iverw.evaluation.counting import block_ranks

KS: tuple[int, ...] = (1, 5, 10)
CHUNK = 256
BLOCK_BYTES = 8 * 2**20  # rows converted and checked together, as float64: bounded memory for any gallery size


@dataclass(frozen=True)
class PerQuery:
    """Per-query results; `first_rank` is 0 where no positive was retrieved (a top-K list missed them all)."""

    first_rank: np.ndarray  # int64, 1-based rank of the first positive
    ap: np.ndarray  # float64, average precision (positives not retrieved count as misses)
    inp: np.ndarray  # float64, #positives / rank of the last positive (0 when it was not retrieved)
    n_pos: np.ndarray  # int64, positives of the query in the gallery
    depth: np.ndarray  # int64, how many gallery items the query's ranking lists
    gallery: int


def encode_labels(query_labels: Sequence, gallery_labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for the labels (any hashable ids: str, int), shared by queries and gallery."""
    q, gl = np.asarray(query_labels), np.asarray(gallery_labels)
    if q.dtype.kind != gl.dtype.kind:  # e.g. int vehicle ids against str ones: compare as text
        q, gl = q.astype(str), gl.astype(str)
    _, codes = np.unique(np.concatenate([q, gl]), return_inverse=True)
    return codes[: len(q)], codes[len(q) :]


def positives(query_codes: np.ndarray, gallery_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gallery indices of every query's positives, ascending, query after query; count per query).

    A query without any positive is an input error.
    """
    order = np.argsort(gallery_codes, kind="stable")
    sorted_codes = gallery_codes[order]
    lo = np.searchsorted(sorted_codes, query_codes, side="left")
    hi = np.searchsorted(sorted_codes, query_codes, side="right")
    lens = hi - lo
    empty = np.flatnonzero(lens == 0)
    if len(empty):
        raise T2IError(f"query #{empty[0]} has no positive in the gallery ({len(empty)} such queries)")
    starts = np.cumsum(lens) - lens
    return order[np.arange(lens.sum()) + np.repeat(lo - starts, lens)], lens.astype(np.int64)


def _rows(scores, start: int, stop: int, query_ids: Sequence[str] | None) -> np.ndarray:
    """Rows start:stop as a numpy array (also from a memory map or a torch tensor on any device)."""
    chunk = scores[start:stop]
    if hasattr(chunk, "detach"):  # torch.Tensor; bfloat16 has no numpy dtype, float32 holds it exactly
        chunk = chunk.detach().cpu()
        chunk = chunk.float() if chunk.dtype.is_floating_point and chunk.element_size() < 4 else chunk
        chunk = chunk.numpy()
    chunk = np.asarray(chunk)
    if chunk.dtype.kind not in "fiu":
        raise T2IError(f"scores must be a real-valued matrix, got dtype {chunk.dtype}")
    if chunk.dtype.kind == "f" and chunk.size and not np.isfinite(chunk).all():
        # NaN has no order; an infinite score ties with every other infinity (and usually is an overflow)
        row, col = np.argwhere(~np.isfinite(chunk))[0]
        query = f"#{start + row}" if query_ids is None else repr(query_ids[start + row])
        kind = "NaN" if np.isnan(chunk[row, col]) else "an infinite score"
        raise T2IError(f"scores contain {kind} (first in the row of query {query}, column {col})")
    return np.ascontiguousarray(_comparable(chunk))


def _comparable(chunk: np.ndarray) -> np.ndarray:
    """A float copy or view with the same order and ties: float16 as float32, integers as float64."""
    if chunk.dtype == np.float16:
        return chunk.astype(np.float32)
    if chunk.dtype.kind in "iu":
        if chunk.dtype.itemsize == 8 and chunk.size and np.abs(chunk.astype(np.float64)).max() > 2.0**53:
            raise T2IError("integer scores beyond 2**53 cannot be compared exactly as floats; scale them down")
        return chunk.astype(np.float64)
    return chunk


def score_metrics(scores, query_labels: Sequence, gallery_labels: Sequence, *, chunk_size: int = CHUNK,
                  query_ids: Sequence[str] | None = None, progress: bool = False) -> PerQuery:
    """Per-query first rank, AP and INP of a queries x gallery score matrix (higher = more similar).

    `query_ids` only name the offending query in error messages.
    """
    if not hasattr(scores, "shape"):  # nested lists
        scores = np.asarray(scores)
    shape = tuple(scores.shape)
    if len(shape) != 2 or shape != (len(query_labels), len(gallery_labels)):
        raise T2IError(f"scores have shape {shape}, expected ({len(query_labels)}, {len(gallery_labels)}) "
                       "= (queries, gallery)")
    pos, n_pos = positives(*encode_labels(query_labels, gallery_labels))
    offsets = np.concatenate([[0], np.cumsum(n_pos)])
    n = len(n_pos)
    first, ap, inp = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    block = max(1, min(chunk_size, BLOCK_BYTES // (8 * max(shape[1], 1))))
    with tqdm(total=n, desc="eval", unit="query", disable=not progress, leave=False) as bar:
        for start in range(0, n, block):
            stop = min(start + block, n)
            ranks = block_ranks(_rows(scores, start, stop, query_ids), pos[offsets[start] : offsets[stop]],
                                n_pos[start:stop])  # the block is freed before the next one is read
            first[start:stop], ap[start:stop], inp[start:stop] = rank_quality(ranks, n_pos[start:stop],
                                                                             n_pos[start:stop])
            bar.update(stop - start)
    return PerQuery(first, ap, inp, n_pos, np.full(n, shape[1], np.int64), shape[1])


def rank_quality(ranks: np.ndarray, found: np.ndarray, n_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first rank, AP, INP) per query from the ascending ranks of the positives each retrieved.

    `ranks` holds `found[q]` ranks for query q, queries in order; positives not retrieved
    (a top-K list) count as misses: AP divides by all `n_pos[q]`, INP is 0 and a query
    that retrieved none has first rank 0. Both evaluation paths use this one function, so
    a ranking and the score matrix it came from give bit-identical numbers.
    """
    found, n_pos = np.asarray(found, np.int64), np.asarray(n_pos, np.int64)
    starts = np.cumsum(found) - found
    hit = found > 0
    position = np.arange(len(ranks)) - np.repeat(starts, found) + 1
    sums = np.zeros(len(found))
    if hit.any():
        sums[hit] = np.add.reduceat(position / ranks, starts[hit])
    first = np.zeros(len(found), np.int64)
    first[hit] = ranks[starts[hit]]
    last = np.ones(len(found))
    last[hit] = ranks[starts[hit] + found[hit] - 1]
    inp = np.where(hit & (found == n_pos), n_pos / last, 0.0)
    return first, sums / n_pos, inp


def list_metrics(hits: Sequence[np.ndarray], n_pos: np.ndarray, depth: np.ndarray, gallery: int) -> PerQuery:
    """Per-query results of ranked lists: `hits[q]` are the 1-based positions of q's positives in its list."""
    ranks = np.concatenate([np.asarray(h, np.int64) for h in hits]) if len(hits) else np.zeros(0, np.int64)
    first, ap, inp = rank_quality(ranks, [len(h) for h in hits], n_pos)
    return PerQuery(first, ap, inp, np.asarray(n_pos, np.int64), np.asarray(depth, np.int64), gallery)


def rank_k(per_query: PerQuery, k: int) -> np.ndarray | None:
    """Per-query hit@k as 0/1, or None when some query's list is shorter than k and holds no positive."""
    unknown = (per_query.first_rank == 0) & (per_query.depth < k)
    if unknown.any():
        return None
    return ((per_query.first_rank >= 1) & (per_query.first_rank <= k)).astype(float)


def summarize(per_query: PerQuery, ks: Sequence[int] = KS) -> dict:
    """Metrics in percent: R{k} (None where a top-K list is too short to decide), mAP, mINP, counts.

    `at_k` is the shortest list length when some ranking is shorter than the gallery:
    mAP and mINP are then mAP@K / mINP@K (positives not listed count as not retrieved).
    """
    out: dict = {}
    for k in ks:
        hits = rank_k(per_query, k)
        out[f"R{k}"] = None if hits is None else 100.0 * float(hits.mean())
    out["mAP"] = 100.0 * float(per_query.ap.mean())
    out["mINP"] = 100.0 * float(per_query.inp.mean())
    shortest = int(per_query.depth.min())
    out["at_k"] = shortest if shortest < per_query.gallery else None
    out["queries"] = len(per_query.ap)
    out["gallery"] = per_query.gallery
    return out


def evaluate(scores, query_labels: Sequence, gallery_labels: Sequence, *, ks: Sequence[int] = KS,
             chunk_size: int = CHUNK) -> dict:
    """Rank-k, mAP and mINP (percent) of a queries x gallery score matrix; higher score = more similar.

    A gallery item is correct for a query when their labels (e.g. vehicle ids) are
    equal; ties are broken by gallery order. `scores` may be a numpy array, a memory
    map or a torch tensor; it is read `chunk_size` rows at a time. Returns
    {"R1", "R5", "R10", "mAP", "mINP", "at_k": None, "queries", "gallery"}.
    """
    return summarize(score_metrics(scores, query_labels, gallery_labels, chunk_size=chunk_size), ks)
