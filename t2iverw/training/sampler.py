"""`sampler: identity`: batches of P identities x K caption-image pairs, IVT's sampler.

The authors' `RandomIdentitySamplerCUHK` (datasets/sampler.py:71-130; 7 x 4 at batch 28,
make_dataloader.py:164-183): each identity's pairs are shuffled and cut into groups of K
(an identity with fewer than K pairs is drawn with replacement up to K, a remainder is
dropped); a batch takes one group from each of P identities drawn without replacement
among those with groups left. With CMPM a row then has K positives, not the ~1 a random
batch gives when identities have few pairs.

One change: theirs ends the epoch when fewer than P identities have groups left, so the
number of batches varies from epoch to epoch. The engine's per-epoch schedule needs a
fixed count, so here every epoch has `(groups // P)` batches and a batch short of
identities with groups left is topped up with fresh groups of other identities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from t2iverw.errors import T2IError


class IdentitySampler(Sampler[int]):
    """Dataset indices, `batch_size` at a time: `batch_size // num_instance` identities, `num_instance` each."""

    def __init__(self, labels: Sequence[int], batch_size: int, num_instance: int):
        if batch_size % num_instance:
            raise T2IError(f"sampler: identity needs batch_size ({batch_size}) to be a multiple of num_instance "
                           f"({num_instance})")
        self.k, self.p = num_instance, batch_size // num_instance
        by_label: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            by_label.setdefault(int(label), []).append(index)
        self.pools = [np.array(v) for _, v in sorted(by_label.items())]
        if len(self.pools) < self.p:
            raise T2IError(f"sampler: identity needs at least {self.p} identities a batch; the train split has "
                           f"{len(self.pools)}")
        groups = sum(max(len(v), self.k) // self.k for v in self.pools)
        self.batches = max(1, groups // self.p)

    def __len__(self) -> int:
        return self.batches * self.p * self.k

    def __iter__(self) -> Iterator[int]:
        seed = int(torch.empty((), dtype=torch.int64).random_().item())  # from torch's RNG, as RandomSampler
        rng = np.random.default_rng(seed)
        groups = [self._groups(pool, rng) for pool in self.pools]
        for _ in range(self.batches):
            left = [i for i, g in enumerate(groups) if g]
            chosen = list(rng.choice(left, size=min(self.p, len(left)), replace=False))
            if len(chosen) < self.p:
                taken = set(chosen)
                others = [i for i in range(len(groups)) if i not in taken]
                extra = list(rng.choice(others, size=self.p - len(chosen), replace=False))
                for i in extra:
                    groups[i] = self._groups(self.pools[i], rng)
                chosen += extra
            for i in chosen:
                yield from groups[i].pop(0)

    def _groups(self, pool: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        """One identity's pairs shuffled and cut into groups of K (sampler.py:100-111)."""
        idx = rng.choice(pool, size=self.k, replace=True) if len(pool) < self.k else rng.permutation(pool)
        return [idx[s : s + self.k].tolist() for s in range(0, len(idx) - self.k + 1, self.k)]
