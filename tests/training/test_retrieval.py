"""Scoring in blocks and ranking: the pieces `predict` streams with, on plain tensors."""

from __future__ import annotations

import numpy as np
import torch

from t2iverw.training.retrieval import Encoded, ranking, score_blocks, score_matrix


def test_blocks_tile_the_whole_score_matrix():
    torch.manual_seed(0)
    q, g = torch.randn(7, 4), torch.randn(5, 4)
    enc = Encoded([f"q{i}" for i in range(7)], ["v"] * 7, q, [f"g{j}" for j in range(5)], ["v"] * 5, g)
    blocks = list(score_blocks(enc, block=3))
    assert [start for start, _ in blocks] == [0, 3, 6] and [b.shape[0] for _, b in blocks] == [3, 3, 1]
    assert np.allclose(np.concatenate([b for _, b in blocks]), (q @ g.t()).numpy(), atol=1e-6)
    assert np.allclose(score_matrix(enc), (q @ g.t()).numpy(), atol=1e-6)


def test_ranking_is_best_first_and_breaks_ties_by_gallery_order():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    assert ranking(scores).tolist() == [[1, 3, 2, 0], [3, 0, 1, 2]]
    assert ranking(scores, 2).tolist() == [[1, 3], [3, 0]]
    assert ranking(scores, 0).tolist() == ranking(scores).tolist()  # 0: the whole gallery
