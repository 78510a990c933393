"""PLFA's building blocks: the part-query decoder and the pooling of patch tokens into part features.

The decoder is DETR's (as the released code uses it): post-norm layers with dropout, the
learned part queries added as positions to a zero target at every layer, a final
LayerNorm. What it attends to (the memory) is the model's choice (`plfa_memory`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DetrDecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(width, ffn)
        self.linear2 = nn.Linear(ffn, width)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.dropout, self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(4))

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor,
                memory_padding: torch.Tensor | None) -> torch.Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attended = self.multihead_attn(tgt + query_pos, memory, memory, key_padding_mask=memory_padding,
                                       need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        tgt = self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))
        return tgt


class PartDecoder(nn.Module):
    """Queries (N, Q, width) read `memory` (N, M, width); `memory_padding` (N, M) is True where ignored."""

    def __init__(self, width: int, heads: int, layers: int, ffn: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DetrDecoderLayer(width, heads, ffn, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.zeros_like(queries)
        for layer in self.layers:
            out = layer(out, memory, queries, memory_padding)
        return self.norm(out)


class LearnedPool(nn.Module):
    """A part's visual feature as a learned weighted sum of its masked patch tokens, plus a bias.

    The same map as the released code's `Conv1d(patches, 1, kernel_size=1)` over
    (mask x tokens), with its initialisation, computed without materialising the
    (parts x patches x width) product.
    """

    def __init__(self, patches: int):
        super().__init__()
        bound = 1 / math.sqrt(patches)
        self.weight = nn.Parameter(torch.empty(patches).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(1).uniform_(-bound, bound))

    def forward(self, tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """tokens (B, patches, width), grid (B, parts, patches) -> (B, parts, width)."""
        return (grid.to(tokens.dtype) * self.weight.to(tokens.dtype)) @ tokens + self.bias.to(tokens.dtype)


def mean_pool(tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The paper's reading: a part's feature is the mean of the patch tokens under its mask."""
    grid = grid.to(tokens.dtype)
    return grid @ tokens / grid.sum(-1, keepdim=True).clamp(min=1)
