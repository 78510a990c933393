"""Where a model fails: for every test caption, the rank of the first image of its own vehicle.

The rank counts the gallery images scored strictly higher than the best correct one, so
rank 0 is a hit at R1; the failure browser lists the queries whose rank is worst.
Scores are formed a block of queries at a time, never the whole matrix at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FirstCorrect:
    rank: np.ndarray  # (queries,) 0-based rank of the first correct image (-1: the vehicle has no image)
    image: np.ndarray  # (queries,) gallery index of that image


@torch.no_grad()
def first_correct(queries: torch.Tensor, query_labels: list[str], gallery: torch.Tensor, gallery_labels: list[str],
                  block: int = 256) -> FirstCorrect:
    """The first correct image of every query and its rank in the query's ranking of `gallery`."""
    names = {v: k for k, v in enumerate(dict.fromkeys([*gallery_labels, *query_labels]))}
    g = torch.tensor([names[v] for v in gallery_labels])
    q = torch.tensor([names[v] for v in query_labels])
    ranks, images = [], []
    for start in range(0, len(query_labels), block):
        scores = queries[start : start + block] @ gallery.t()
        correct = q[start : start + block, None] == g[None, :]
        best = scores.masked_fill(~correct, float("-inf")).max(dim=1)
        rank = (scores > best.values[:, None]).sum(dim=1)
        ranks.append(torch.where(correct.any(dim=1), rank, torch.full_like(rank, -1)))
        images.append(best.indices)
    empty = torch.zeros(0, dtype=torch.long)
    return FirstCorrect(torch.cat(ranks or [empty]).numpy(), torch.cat(images or [empty]).numpy())


def worst(found: FirstCorrect, n: int) -> list[int]:
    """Indices of the `n` queries whose first correct image ranks worst (ties: query order)."""
    order = np.argsort(-found.rank, kind="stable")
    return [int(i) for i in order[:n] if found.rank[i] >= 0]
