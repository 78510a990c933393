"""search.topk: the bf16 first pass never changes which rows are the top k, or their order.

The expected top k is computed in float64 with NumPy, not with the code under test. The
galleries are built so that many scores lie closer together than bf16's rounding error:
a first pass taken at face value (no error bound) would pick the wrong rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2iverw.search.topk import HalfReadTopK


def near_tie_gallery(rows: int, width: int, seed: int, top: float = 0.9, step: float = 2e-5
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, query), L2-normalised float32: scores `top`, `top - step`, ... in a random row order;
    2e-5 apart is far inside bf16's error (~4e-3) and far outside float32's (~1e-7)."""
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(width)
    query /= np.linalg.norm(query)
    noise = rng.standard_normal((rows, width))
    noise -= np.outer(noise @ query, query)  # orthogonal to the query
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    target = top - step * rng.permutation(rows)  # distinct scores
    gallery = target[:, None] * query + np.sqrt(1 - target**2)[:, None] * noise
    return gallery.astype(np.float32), query.astype(np.float32)


def float64_top(gallery: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return list(np.argsort(-(gallery.astype(np.float64) @ query.astype(np.float64)), kind="stable")[:k])


@pytest.mark.parametrize("rows, k", [(6161, 10), (500, 1), (500, 50), (40, 40), (40, 100)])
def test_top_k_equals_the_float64_top_k_on_near_ties(rows, k):
    gallery, query = near_tie_gallery(rows, 64, seed=rows + k)
    ranker = HalfReadTopK(torch.from_numpy(gallery))
    scores, index = ranker.top(torch.from_numpy(query), min(k, rows))
    assert index.tolist() == float64_top(gallery, query, k)
    assert torch.all(scores[:-1] >= scores[1:])


def test_the_bound_is_what_keeps_it_exact():
    """Candidates at the bf16 scores' face value (bound 0) miss rows of the true top 10.

    The 6th best score sits on a bf16 rounding midpoint (230.5 / 256), 2e-6 apart: the bf16 pass
    rounds the rows above it up and most below it down, each row moved by its own input rounding
    (~5e-4), so the top bucket holds dozens of rows but only some of the true top 10."""
    gallery, query = near_tie_gallery(2000, 64, seed=1, top=230.5 / 256 + 5 * 2e-6, step=2e-6)
    ranker = HalfReadTopK(torch.from_numpy(gallery))
    q = torch.from_numpy(query)
    truth = set(float64_top(gallery, query, 10))
    assert truth <= set(ranker.candidates(q, 10).tolist())
    ranker.bound = lambda query: 0.0
    assert not truth <= set(ranker.candidates(q, 10).tolist())


def test_random_gallery_keeps_few_candidates():
    """On well-spread scores the float32 pass scores a few dozen rows, not the gallery."""
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((20_000, 512)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = gallery[123] + 0.5 * gallery[456]
    query /= np.linalg.norm(query)
    ranker = HalfReadTopK(torch.from_numpy(gallery))
    assert len(ranker.candidates(torch.from_numpy(query), 10)) < 200
    assert ranker.top(torch.from_numpy(query), 10)[1].tolist() == float64_top(gallery, query, 10)
