"""Exact ranks of every positive in a block of score rows, reading each row about once.

The rule (see metrics.py): rank(p) = 1 + #{j: s_j > s_p} + #{j < p: s_j == s_p}.

Each row's P positives are sorted by score, v_1 <= ... <= v_P, and level k counts the
items scoring at least v_k. The lowest levels need whole rows; for a trained model few
items reach the upper ones. So a block of rows is compared whole (a vectorised compare
and a per-row count per level, while the block sits in cache) only as long as many
items remain above the next level; then the items above it are gathered once, sorted
under a (row, score) key, and every remaining positive is found in them by binary
search. Random scores stay on whole-block levels, still far cheaper than a Python loop
per positive; in a long row (a large gallery) they are counted one positive at a time.

Ties: positives sharing one score take the consecutive ranks gt+1..gt+m in some order,
which gives the metrics (they use the set of ranks) exactly. Only a *negative* scoring
exactly a positive's score makes the order matter, so each level also counts `>`; a row
where more items equal a level's score than positives do is recomputed by the direct
formula (`direct_ranks`).
"""

from __future__ import annotations

import numpy as np

LANE = 255  # per-row counts are summed in uint8 lanes of this many cells, which never overflow
# Gathering and sorting one item above a level costs about as much as comparing this many
# items at one whole-block level (measured: benchmark/bench_eval.py); it sets when to switch.
GATHER_COST = 100.0
# From this gallery size on, rows where too many items beat the weakest positive to gather
# (random-like scores) are counted one positive at a time (`direct_ranks`) instead of by
# whole-block levels: a row then fits in cache by itself, and per-call overhead is small.
LONG_ROW = 32768
SAMPLES = 8


class Workspace:
    """Compare buffers reused across blocks: fresh multi-MB arrays per block cost page faults."""

    def __init__(self, rows: int, gallery: int):
        self.gallery = gallery
        self.padded = -(-gallery // LANE) * LANE
        self.flags = np.zeros((rows, self.padded), bool)  # columns past `gallery` stay False

    def compare(self, op, sub: np.ndarray, threshold: np.ndarray) -> np.ndarray:
        """op(sub, threshold) into the buffer; returns the (rows, padded) flags."""
        out = self.flags[: len(sub)]
        op(sub, threshold, out=out[:, : self.gallery])
        return out

    def row_counts(self, flags: np.ndarray) -> np.ndarray:
        lanes = flags.view(np.uint8).reshape(len(flags), -1, LANE)
        return lanes.sum(axis=2, dtype=np.uint8).sum(axis=1, dtype=np.int64)


def direct_ranks(row: np.ndarray, pos_idx: np.ndarray) -> np.ndarray:
    """Ascending ranks of the gallery items `pos_idx` in `row`: two counts per positive, any ties."""
    ranks = [1 + np.count_nonzero(row > row[p]) + np.count_nonzero(row[:p] == row[p]) for p in pos_idx]
    return np.sort(np.array(ranks, dtype=np.int64))


def block_ranks(block: np.ndarray, pos: np.ndarray, lens: np.ndarray, work: Workspace | None = None) -> np.ndarray:
    """Ranks of all positives of a block, ascending within each row, rows in order.

    `block` is an (n, G) float32 or float64 array without NaN; `pos` holds the positives'
    gallery indices row after row (`lens[i]` of them for row i).
    """
    n, g = block.shape
    work = work or Workspace(n, g)
    rows = np.repeat(np.arange(n), lens)
    starts = np.cumsum(lens) - lens
    if g >= LONG_ROW and not _worth_gathering(block, np.minimum.reduceat(block[rows, pos], starts), lens, g):
        return np.concatenate([direct_ranks(row, pos[a : a + m]) for row, a, m in zip(block, starts, lens)])
    slot = np.arange(len(pos)) - starts[rows]
    levels = np.full((n, int(lens.max())), np.nan, dtype=block.dtype)
    levels[rows, slot] = block[rows, pos]
    levels.sort(axis=1)  # each row's positive scores ascending; the NaN pads (compare False) last
    values = levels[rows, slot]
    mult, within = _equal_groups(rows, values)
    expected = np.zeros(levels.shape, np.int64)  # items equal to a level's score when no negative ties
    expected[rows, slot] = mult

    counts = _Counts(n, levels.shape[1])
    _count_levels(block, levels, lens, expected, counts, work)
    above = counts.above(rows, slot, mult)
    rank = above + 1 + (mult - 1 - within)  # strictly decreasing along each row's slots
    out = np.empty(len(values), np.int64)
    out[starts[rows] + lens[rows] - 1 - slot] = rank
    for r in np.flatnonzero(counts.direct):
        out[starts[r] : starts[r] + lens[r]] = direct_ranks(block[r], pos[starts[r] : starts[r] + lens[r]])
    return out


class _Counts:
    """Per (row, level): items >= the level's score, items > it where counted exactly, and the rows
    left to the direct formula (a negative ties a positive, or long rows of random-like scores)."""

    def __init__(self, rows: int, levels: int):
        self.ge = np.zeros((rows, levels), np.int64)
        self.gt = np.full((rows, levels), -1, np.int64)  # -1: only known when the row has no tie
        self.direct = np.zeros(rows, bool)

    def above(self, rows: np.ndarray, slot: np.ndarray, mult: np.ndarray) -> np.ndarray:
        """Items strictly above each positive (exact for every row not left to the direct formula)."""
        ge, gt = self.ge[rows, slot], self.gt[rows, slot]
        exact = gt >= 0
        bad = exact & (ge - gt != mult)
        self.direct[rows[bad]] = True
        return np.where(exact, gt, ge - mult)


def _equal_groups(rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each sorted positive: how many positives of its row share its score, and its index among them."""
    new = np.ones(len(values), bool)
    new[1:] = (rows[1:] != rows[:-1]) | (values[1:] != values[:-1])
    group = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    return np.bincount(group)[group], np.arange(len(values)) - first[group]


def _count_levels(block, levels, lens, expected, counts: _Counts, work: Workspace) -> None:
    """Count levels over whole rows while many items reach them, then the rest from the items gathered."""
    g = block.shape[1]
    ids, sub, sub_levels, sub_expected = np.arange(len(block)), block, levels, expected
    for k in range(levels.shape[1]):
        active = lens[ids] > k
        if active.mean() < 0.5:  # most rows are done: stop comparing them
            ids, sub, sub_levels, sub_expected = ids[active], sub[active], sub_levels[active], sub_expected[active]
        threshold = sub_levels[:, k : k + 1]
        flags = work.compare(np.greater_equal, sub, threshold)
        ge = work.row_counts(flags)
        remaining = np.maximum(lens[ids] - k, 0)
        if ge.sum() * GATHER_COST < remaining.sum() * g:
            _gathered_levels(flags, sub, sub_levels, remaining, k, ids, counts, work)
            return
        if g >= LONG_ROW:  # a long row stays in cache on its own: two counts per positive read it less often
            counts.direct[ids[remaining > 0]] = True
            return
        counts.ge[ids, k] = ge
        flags = work.compare(np.greater, sub, threshold)
        if np.count_nonzero(flags) != ge.sum() - sub_expected[:, k].sum():  # a negative equals a positive
            gt = work.row_counts(flags)
            counts.direct[ids[ge - gt != sub_expected[:, k]]] = True


def _worth_gathering(block: np.ndarray, weakest: np.ndarray, lens: np.ndarray, g: int) -> bool:
    """Whether few enough items beat each row's weakest positive to gather them, judged on
    SAMPLES contiguous stretches of columns (1/64 of the row): a long row of random-like
    scores goes to the direct formula without being read whole first."""
    width = max(1, g // (64 * SAMPLES))
    starts = np.linspace(0, g - width, SAMPLES).astype(int)
    seen = sum(np.count_nonzero(block[:, a : a + width] >= weakest[:, None]) for a in starts)
    return seen * (g / (width * SAMPLES)) * GATHER_COST < lens.sum() * g


def _gathered_levels(flags, sub, sub_levels, remaining, k0, ids, counts: _Counts, work: Workspace) -> None:
    """Exact `>=` and `>` counts of levels k0.. from the items flagged as scoring at least level k0."""
    flat = np.flatnonzero(flags)
    per_row = np.diff(np.searchsorted(flat, np.arange(len(sub) + 1) * work.padded))
    item_rows = np.repeat(np.arange(len(sub)), per_row)
    item_values = sub.ravel().take(flat - item_rows * (work.padded - sub.shape[1]))
    ends = np.cumsum(per_row)

    pr, pk = np.nonzero(np.arange(sub_levels.shape[1] - k0)[None, :] < remaining[:, None])
    probe_values = sub_levels[pr, k0 + pk]
    item_keys, probe_keys = _order_keys(item_values, probe_values)
    item_keys |= item_rows.astype(np.uint64) << np.uint64(32)
    item_keys.sort()
    probe_keys |= pr.astype(np.uint64) << np.uint64(32)
    counts.ge[ids[pr], k0 + pk] = ends[pr] - np.searchsorted(item_keys, probe_keys, side="left")
    counts.gt[ids[pr], k0 + pk] = ends[pr] - np.searchsorted(item_keys, probe_keys, side="right")


def _order_keys(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint64 keys below 2**32 with the same order and equalities as the values of a and b."""
    if a.dtype == np.float32:
        return _float32_key(a), _float32_key(b)
    _, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)  # dense ranks: exact for any dtype
    inverse = inverse.astype(np.uint64)
    return inverse[: len(a)], inverse[len(a) :]


def _float32_key(x: np.ndarray) -> np.ndarray:
    """IEEE float32 bits flipped so that unsigned order is numeric order (-0.0 counted as +0.0)."""
    bits = (x + np.float32(0)).view(np.uint32)  # -0.0 + 0 == +0.0
    flip = np.uint32(0x80000000) | (np.uint32(0) - (bits >> np.uint32(31)))
    return (bits ^ flip).astype(np.uint64)
