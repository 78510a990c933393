"""The part-slot decoder of the part-level correspondence model: learned slots shared by images and captions.

The same K learned queries read an image's patch tokens or a caption's word tokens
through one shared cross-attention and one shared slot transformer, so slot k of an
image and slot k of a caption come out of the same weights: part correspondence across
the modalities is built in, with no part labels. Only the input LayerNorms are per
modality, as in the authors' `shared_decoding` (PLOT, model/build_local_slot_detachRecon.py:140-161).
"""

from __future__ import annotations

import torch
from torch import nn


class PartSlotDecoder(nn.Module):
    def __init__(self, width: int, slots: int, heads: int, layers: int, ffn: int, dropout: float):
        super().__init__()
        self.slots = nn.Parameter(torch.empty(slots, width))
        nn.init.orthogonal_(self.slots)  # orthogonal start, as the authors' slots (PLOT ...detachRecon.py:123-124)
        self.norm_slots = nn.LayerNorm(width)
        self.norm_image = nn.LayerNorm(width)
        self.norm_text = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        block = nn.TransformerEncoderLayer(width, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor, modality: str,
                padding: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(parts (B, K, width), attention (B, K, N)): each slot's embedding and where it looked.

        `padding` (B, N) is True at tokens to ignore. The attention is the cross-attention's
        map averaged over heads; each slot's row sums to one over the tokens.
        """
        norm = self.norm_image if modality == "image" else self.norm_text
        memory = norm(tokens)
        queries = self.norm_slots(self.slots)[None].expand(tokens.shape[0], -1, -1).to(memory.dtype)
        parts, attention = self.cross_attn(queries, memory, memory, key_padding_mask=padding, need_weights=True,
                                           average_attn_weights=True)
        return self.norm_out(self.blocks(parts)), attention
