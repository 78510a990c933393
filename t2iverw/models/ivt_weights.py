"""IVT backbone weights as the authors' `load_param_hybrid` (vit_vl.py:1050-1098).

ViT gives the patch projection, CLS, position embeddings (resized bilinearly to our grid, V:1083-1088),
and per layer norm1, the shared attention, the shared norm2 and mlp_vis. BERT gives the text embeddings
and per layer mlp_txt (intermediate/output dense); BERT's attention and output LayerNorm are not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2iverw.errors import T2IError


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise T2IError(f"IVT weights: {name} has shape {tuple(src.shape)} in the checkpoint, {tuple(dst.shape)} here")
    with torch.no_grad():
        dst.copy_(src)


def _check(ours: dict, theirs: dict, source: str) -> None:
    for key, value in ours.items():
        if theirs[key] != value:
            raise T2IError(f"IVT weights: {source} has {key}={theirs[key]}, the IVT config has {value}")


def resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """[1, 1+g*g, d] -> [1, 1+grid*grid, d], the patch part resized bilinearly (V:121-135)."""
    cls, patches = pos[:, :1], pos[:, 1:]
    g = int(patches.shape[1] ** 0.5)
    patches = patches.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bilinear")
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], 1)


def load_vit(model: nn.Module, source: str) -> None:
    """Copy a transformers `ViTModel` into the image side and the shared layers."""
    from transformers import ViTModel

    vit = ViTModel.from_pretrained(source, add_pooling_layer=False)
    c = model.cfg
    _check({"hidden_size": c.dim, "num_hidden_layers": c.depth, "num_attention_heads": c.heads,
            "patch_size": c.patch, "intermediate_size": int(c.dim * c.mlp_ratio)}, vars(vit.config), source)
    emb = vit.embeddings
    _copy(model.cls_token, emb.cls_token, "cls_token")
    _copy(model.patch_embed.weight, emb.patch_embeddings.projection.weight, "patch projection")
    _copy(model.patch_embed.bias, emb.patch_embeddings.projection.bias, "patch projection bias")
    _copy(model.pos_embed, resize_pos_embed(emb.position_embeddings, model.grid), "position embeddings")
    for i, (ours, layer) in enumerate(zip(model.blocks, vit.layers)):  # transformers 5 ViT names
        att = layer.attention
        qkv = [att.q_proj, att.k_proj, att.v_proj]
        _copy(ours.attn.in_proj_weight, torch.cat([m.weight for m in qkv]), f"layer {i} qkv")
        _copy(ours.attn.in_proj_bias, torch.cat([m.bias for m in qkv]), f"layer {i} qkv bias")
        pairs = [(ours.attn.out_proj, att.o_proj), (ours.norm1, layer.layernorm_before),
                 (ours.norm2, layer.layernorm_after), (ours.mlp_vis.fc1, layer.mlp.fc1), (ours.mlp_vis.fc2, layer.mlp.fc2)]
        for dst, src in pairs:
            _copy(dst.weight, src.weight, f"layer {i} weight")
            _copy(dst.bias, src.bias, f"layer {i} bias")
    _copy(model.norm.weight, vit.layernorm.weight, "final norm")
    _copy(model.norm.bias, vit.layernorm.bias, "final norm bias")


def load_bert(model: nn.Module, source: str) -> None:
    """Copy a transformers `BertModel`'s embeddings and FFNs into the text side (attention skipped)."""
    from transformers import BertModel

    bert = BertModel.from_pretrained(source, add_pooling_layer=False)
    c = model.cfg
    _check({"hidden_size": c.dim, "num_hidden_layers": c.depth, "vocab_size": c.vocab_size,
            "intermediate_size": int(c.dim * c.mlp_ratio)}, vars(bert.config), source)
    if bert.config.max_position_embeddings < c.text_length:
        raise T2IError(f"IVT weights: {source} has {bert.config.max_position_embeddings} positions, text_length is {c.text_length}")
    ours, theirs = model.embeddings, bert.embeddings
    _copy(ours.word_embeddings.weight, theirs.word_embeddings.weight, "word embeddings")
    _copy(ours.position_embeddings.weight, theirs.position_embeddings.weight[: c.text_length], "position embeddings")
    _copy(ours.token_type_embeddings.weight, theirs.token_type_embeddings.weight[:2], "token type embeddings")
    _copy(ours.LayerNorm.weight, theirs.LayerNorm.weight, "embedding LayerNorm")
    _copy(ours.LayerNorm.bias, theirs.LayerNorm.bias, "embedding LayerNorm bias")
    for i, (block, layer) in enumerate(zip(model.blocks, bert.encoder.layer)):
        for dst, src in ((block.mlp_txt.fc1, layer.intermediate.dense), (block.mlp_txt.fc2, layer.output.dense)):
            _copy(dst.weight, src.weight, f"layer {i} text FFN")
            _copy(dst.bias, src.bias, f"layer {i} text FFN bias")
