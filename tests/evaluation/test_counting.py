"""Block counting against the direct per-positive formula, on every path it can take."""

from __future__ import annotations

import numpy as np
import pytest

from t2iverw.evaluation import counting
from t2iverw.evaluation.counting import block_ranks, direct_ranks


def reference(block: np.ndarray, pos: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([direct_ranks(row, p) for row, p in zip(block, pos)])


def positives_of(gallery: np.ndarray, query: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    pos = [np.flatnonzero(gallery == label) for label in query]
    return pos, np.concatenate(pos), np.array([len(p) for p in pos])


# GATHER_COST 0: gather at the first level; inf: count every level over whole rows; 50: switch midway;
# LONG_ROW 1: rows not gathered go to the direct formula
@pytest.mark.parametrize(("gather_cost", "long_row"), [(0.0, 2**20), (50.0, 2**20), (float("inf"), 2**20), (50.0, 1)])
@pytest.mark.parametrize("kind", ["float32", "float64", "ties", "trained"])
def test_block_ranks_equal_the_direct_formula(monkeypatch, gather_cost, long_row, kind):
    monkeypatch.setattr(counting, "GATHER_COST", gather_cost)
    monkeypatch.setattr(counting, "LONG_ROW", long_row)
    rng = np.random.default_rng(sum(map(ord, kind)) + int(min(gather_cost, 99)) + long_row % 7)
    for trial in range(30):
        n, g = int(rng.integers(1, 40)), int(rng.integers(2, 300))
        gallery = rng.integers(0, int(rng.integers(1, 12)), g)
        query = rng.choice(gallery, n)
        if kind == "ties":  # few distinct values: negatives often equal positives
            block = rng.integers(-2, 3, (n, g)).astype(np.float64)
        elif kind == "trained":  # positives mostly on top, as the whole-block levels are cut short
            block = rng.standard_normal((n, g)).astype(np.float32) + 3 * (gallery[None, :] == query[:, None])
        else:
            block = rng.standard_normal((n, g)).astype(kind)
        pos, flat, lens = positives_of(gallery, query)
        got = block_ranks(block, flat, lens)
        assert np.array_equal(got, reference(block, pos)), (kind, trial)


@pytest.mark.parametrize("gather_cost", [0.0, float("inf")])
def test_signed_zero_infinities_and_duplicate_positives(monkeypatch, gather_cost):
    monkeypatch.setattr(counting, "GATHER_COST", gather_cost)
    gallery = np.array([0, 1, 0, 1, 0, 0])
    block = np.array([
        [-0.0, 0.0, 0.0, np.inf, -np.inf, 0.0],  # -0.0 == +0.0: ties between positives and a negative
        [np.inf, np.inf, 1.0, -np.inf, np.inf, 2.0],  # an infinite positive tied with an infinite negative
        [3.0, 5.0, 3.0, 1.0, 3.0, -1.0],  # three positives share a score, no negative does
    ], dtype=np.float32)
    query = np.array([0, 0, 0])
    pos, flat, lens = positives_of(gallery, query)
    assert np.array_equal(block_ranks(block, flat, lens), reference(block, pos))


def test_many_positives_per_row(monkeypatch):
    # rows whose positives outnumber the others drop out of whole-block counting at different levels
    monkeypatch.setattr(counting, "GATHER_COST", float("inf"))
    rng = np.random.default_rng(7)
    gallery = np.concatenate([np.zeros(300, int), np.arange(1, 40)])
    query = np.array([0, 0, 1, 5, 0, 39])
    block = rng.standard_normal((len(query), len(gallery))).astype(np.float32)
    pos, flat, lens = positives_of(gallery, query)
    assert np.array_equal(block_ranks(block, flat, lens), reference(block, pos))
