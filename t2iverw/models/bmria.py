"""BMRIA's building blocks, shaped as in the released code.

Text branch (MLM): the masked caption's tokens query the image tokens through one
cross-attention with LayerNorm on both sides and **no residual** (the caption reaches
the head only through where it looks), then CLIP-style residual blocks with full
attention, a final LayerNorm and a dense -> QuickGELU -> LayerNorm -> vocabulary head.

Image branch (MIM): MAE-style. The visible patches' encodings, the learned mask token
in the hidden places and a learned position embedding go through blocks of
self-attention, cross-attention to every caption token, and a GEGLU feed-forward (all
pre-norm residual), then a linear head to the patch's pixels.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    """CLIP's residual attention block (pre-norm, QuickGELU MLP), full attention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(),
                                             c_proj=nn.Linear(4 * width, width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class MlmBranch(nn.Module):
    """(masked caption tokens, image tokens) -> features at every caption position; `head` maps them to
    the vocabulary (applied to the masked positions only: the same numbers, a fraction of the work)."""

    def __init__(self, width: int, heads: int, layers: int, vocab: int):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_transformer = nn.Sequential(*(ResidualBlock(width, heads) for _ in range(layers)))
        self.ln_pre_t, self.ln_pre_i, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.head = nn.Sequential(OrderedDict(dense=nn.Linear(width, width), gelu=QuickGELU(),
                                              ln=nn.LayerNorm(width), fc=nn.Linear(width, vocab)))
        # the released initialisation (IRRA's)
        attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        for block in self.cross_transformer:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.cross_attn.in_proj_weight, std=attn_std)
        nn.init.normal_(self.cross_attn.out_proj.weight, std=proj_std)
        nn.init.normal_(self.head.dense.weight, std=fc_std)
        nn.init.normal_(self.head.fc.weight, std=proj_std)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        kv = self.ln_pre_i(image)
        x = self.cross_attn(self.ln_pre_t(text), kv, kv, need_weights=False)[0]  # no residual, as released
        return self.ln_post(self.cross_transformer(x))


class Attention(nn.Module):
    """Multi-head attention with an inner width of heads x head_dim (query/key/value without bias)."""

    def __init__(self, width: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(width, inner, bias=False) for _ in range(3))
        self.to_out = nn.Linear(inner, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)))
        return self.to_out(out.transpose(1, 2).flatten(2))


class GEGLU(nn.Module):
    def __init__(self, width: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(width, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class MimBlock(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int):
        super().__init__()
        self.attn1, self.attn2 = Attention(width, heads, head_dim), Attention(width, heads, head_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.ff = nn.Sequential(GEGLU(width, 4 * width), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn1(y, y)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class MimBranch(nn.Module):
    """(visible patch encodings, which patches they are, caption tokens) -> pixels of every patch."""

    def __init__(self, width: int, heads: int, head_dim: int, layers: int, patches: int, patch_pixels: int):
        super().__init__()
        self.token = nn.Parameter(torch.randn(width))
        self.pos = nn.Parameter(width**-0.5 * torch.randn(1 + patches, width))
        self.blocks = nn.ModuleList(MimBlock(width, heads, head_dim) for _ in range(layers))
        self.head = nn.Linear(width, patch_pixels)

    def forward(self, visible: torch.Tensor, kept: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """visible (B, 1 + kept, width) with CLS first; kept (B, kept) the visible patches' grid indices, in order."""
        b, n = kept.shape[0], self.pos.shape[0] - 1
        patches = self.token.to(visible.dtype).expand(b, n, -1)
        patches = patches.scatter(1, kept[..., None].expand(-1, -1, visible.shape[-1]), visible[:, 1:])
        x = torch.cat([visible[:, :1], patches], dim=1) + self.pos.to(visible.dtype)
        for block in self.blocks:
            x = block(x, text)
        return self.head(x[:, 1:])
