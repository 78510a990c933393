"""The exact top-k of a gallery product, read mostly at half the bytes.

A query's product over a cached gallery is memory-bound: 138,517 x 512 float32 features are
283 MB read per query. A bfloat16 copy halves that, but its scores are off by up to about
2^-8 (bf16 keeps 8 significant bits) and would reorder near-ties against `predict`. So the
bf16 pass only finds *candidates*: every row whose bf16 score is within twice the proven
error bound of the k-th best bf16 score. The true top-k is always among them (if k rows have
approximate scores >= t, the k-th exact score is >= t - delta, so every true top-k row
scores >= t - 2 delta approximately). The candidates, usually a few dozen, are then scored
in float32 from the original features and ranked: the same ranking the full float32
product gives.

Error bound, for a gallery row g and the query q: rounding g and q to bf16 moves each term
g_i q_i by at most (2u + u^2) |g_i q_i|, u = 2^-8 (bf16 keeps 8 significant bits), so the sum
by at most about 2u ||g|| ||q|| (Cauchy-Schwarz); rounding the bf16 result adds u |score|
<= u ||g|| ||q||; float32 accumulation of d terms, in both passes, adds at most about
d 2^-24 ||g|| ||q|| each. The bound assumes the bf16 product accumulates in float32, as
PyTorch's CPU kernel does (`bf16_gemv_trans` sums with `bf16_dot_with_fp32_arith`,
aten/src/ATen/native/cpu/BlasKernel.cpp) and cuBLAS does by default; widening each block to
float32 first would not need that, but on AVX2 it read no faster than float32 itself
(21.7 against 20.9 ms, against 15.5 ms for the bf16 product, 138,517 x 512, one thread).
"""

from __future__ import annotations

import torch

BF16_UNIT = 2.0 ** -8  # unit roundoff of bfloat16 (round to nearest, 8 significant bits)
FP32_UNIT = 2.0 ** -24


class HalfReadTopK:
    """A gallery (rows x width, float32) and its bf16 copy; `top(q, k)` is `torch.topk(gallery @ q, k)`."""

    def __init__(self, gallery: torch.Tensor) -> None:
        self.gallery = gallery
        self.coarse = gallery.to(torch.bfloat16)
        self.max_norm = float(gallery.norm(dim=1).max()) if len(gallery) else 0.0

    def bound(self, query: torch.Tensor) -> float:
        """The largest possible |bf16-pass score - float32 score| for any row (module docstring)."""
        d = self.gallery.shape[1]
        return 1.01 * (3 * BF16_UNIT + 2 * d * FP32_UNIT) * self.max_norm * float(query.norm()) + 1e-30

    def coarse_scores(self, query: torch.Tensor) -> torch.Tensor:
        return torch.mv(self.coarse, query.to(torch.bfloat16)).to(torch.float32)

    def candidates(self, query: torch.Tensor, k: int) -> torch.Tensor:
        """Row indices that must hold the float32 top-k (all rows when k covers the gallery)."""
        if k >= len(self.gallery):
            return torch.arange(len(self.gallery))
        approx = self.coarse_scores(query)
        kth = torch.topk(approx, k, sorted=False).values.min()
        return torch.nonzero(approx >= kth - 2 * self.bound(query)).flatten()

    def top(self, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, row indices) of the k best rows, best first, scored in float32."""
        query = query.to(torch.float32)
        rows = self.candidates(query, k)
        scores, order = torch.topk(self.gallery[rows] @ query, min(k, len(rows)))
        return scores, rows[order]
