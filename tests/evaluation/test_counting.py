"""The compiled counting loop against the direct per-positive formula in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from t2iverw.evaluation.counting import block_ranks, direct_ranks


def reference(block: np.ndarray, pos: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([direct_ranks(row, p) for row, p in zip(block, pos)])


def positives_of(gallery: np.ndarray, query: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    pos = [np.flatnonzero(gallery == label) for label in query]
    return pos, np.concatenate(pos), np.array([len(p) for p in pos])


@pytest.mark.parametrize("kind", ["float32", "float64", "ties", "trained"])
def test_block_ranks_equal_the_direct_formula(kind):
    rng = np.random.default_rng(sum(map(ord, kind)))
    for trial in range(40):
        n, g = int(rng.integers(1, 40)), int(rng.integers(2, 300))
        gallery = rng.integers(0, int(rng.integers(1, 12)), g)
        query = rng.choice(gallery, n)
        if kind == "ties":  # few distinct values: negatives often equal positives
            block = rng.integers(-2, 3, (n, g)).astype(np.float64)
        elif kind == "trained":  # positives mostly on top
            block = rng.standard_normal((n, g)).astype(np.float32) + 3 * (gallery[None, :] == query[:, None])
        else:
            block = rng.standard_normal((n, g)).astype(kind)
        pos, flat, lens = positives_of(gallery, query)
        assert np.array_equal(block_ranks(block, flat, lens), reference(block, pos)), (kind, trial)


def test_signed_zero_infinities_and_duplicate_positives():
    gallery = np.array([0, 1, 0, 1, 0, 0])
    block = np.array([
        [-0.0, 0.0, 0.0, np.inf, -np.inf, 0.0],  # -0.0 == +0.0: ties between positives and a negative
        [np.inf, np.inf, 1.0, -np.inf, np.inf, 2.0],  # an infinite positive tied with an infinite negative
        [3.0, 5.0, 3.0, 1.0, 3.0, -1.0],  # three positives share a score, no negative does
    ], dtype=np.float32)
    query = np.array([0, 0, 0])
    pos, flat, lens = positives_of(gallery, query)
    assert np.array_equal(block_ranks(block, flat, lens), reference(block, pos))
    # by hand, row 0: scores [-0, 0, 0, inf, -inf, 0], positives 0, 2, 4, 5; inf is above all of them.
    # -0.0 at 0: 1 + 1 (inf) + 0 earlier equal = 2; 0.0 at 2: 1 + 1 + 2 (indices 0, 1) = 4;
    # -inf at 4: 1 + 5 = 6; 0.0 at 5: 1 + 1 + 3 (0, 1, 2) = 5
    assert block_ranks(block[:1], flat[:4], lens[:1]).tolist() == [2, 4, 5, 6]


def test_many_positives_per_row_and_a_long_row():
    rng = np.random.default_rng(7)
    gallery = np.concatenate([np.zeros(300, int), np.arange(1, 40), np.full(40000, 99)])
    query = np.array([0, 0, 1, 5, 0, 39])
    block = rng.standard_normal((len(query), len(gallery))).astype(np.float32)
    pos, flat, lens = positives_of(gallery, query)
    assert np.array_equal(block_ranks(block, flat, lens), reference(block, pos))
