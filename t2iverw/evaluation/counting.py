"""Exact ranks of every positive of a block of score rows, reading each row from memory once.

The rule (see metrics.py): rank(p) = 1 + #{j: s_j > s_p} + #{j < p: s_j == s_p}.

For each row, a compiled loop (numba) counts, for each of the row's P positives, the items
scoring above it, then the earlier items scoring the same. The row is read from memory
once and stays in the CPU cache while its P counting passes run over it; each pass is a
branch-free compare-and-add the compiler vectorises. So the cost is the same whatever
the scores look like (a trained model's, or random ones), no queries x gallery array is
ever built, and ties follow the rule exactly. `direct_ranks` is the same formula in
numpy, one row at a time: the reference the compiled loop is tested against.
"""

from __future__ import annotations

import numba
import numpy as np


def block_ranks(block: np.ndarray, pos: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Ranks of all positives of a block, ascending within each row, rows in order.

    `block` is an (n, G) float32 or float64 array without NaN; `pos` holds the positives'
    gallery indices row after row (`lens[i]` of them for row i).
    """
    out = np.empty(len(pos), np.int64)
    _ranks(np.ascontiguousarray(block), pos.astype(np.int64, copy=False), lens.astype(np.int64, copy=False), out)
    return out


@numba.njit(cache=True, nogil=True)
def _ranks(block, pos, lens, out):  # pragma: no cover - compiled
    start = 0
    for i in range(block.shape[0]):
        row = block[i]
        for k in range(start, start + lens[i]):
            p = pos[k]
            score = row[p]
            above = 0
            for j in range(row.shape[0]):
                above += row[j] > score
            earlier = 0
            for j in range(p):
                earlier += row[j] == score
            out[k] = 1 + above + earlier
        out[start : start + lens[i]].sort()
        start += lens[i]


def direct_ranks(row: np.ndarray, pos_idx: np.ndarray) -> np.ndarray:
    """Ascending ranks of the gallery items `pos_idx` in `row`: two numpy counts per positive."""
    ranks = [1 + np.count_nonzero(row > row[p]) + np.count_nonzero(row[:p] == row[p]) for p in pos_idx]
    return np.sort(np.array(ranks, dtype=np.int64))
