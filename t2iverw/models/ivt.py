"""IVT (Shu et al., ECCV 2022 workshops): one transformer shared by images and texts.

Each block has one self-attention shared by both modalities and separate feed-forward
layers (`mlp_vis` / `mlp_txt`), as in the authors' `BlockVisTxt`. Training aligns the CLS
features with CMPM at three text levels (MLA: sentence, phrase, word); BMM, as in the
released code, drops a random share of image patches and text tokens during training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2iverw.models.base import RetrievalModel
from t2iverw.training.config import Config


def cmpm(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cross-modal projection matching (Zhang & Lu 2018), both directions, as IVT's `cmps_loss.py`."""
    match = (labels[:, None] == labels[None, :]).float()
    target = match / match.sum(1, keepdim=True)
    t_norm = F.normalize(text, dim=-1)
    i_norm = F.normalize(image, dim=-1)
    i2t = image @ t_norm.t()
    t2i = text @ i_norm.t()
    loss_i2t = (F.softmax(i2t, 1) * (F.log_softmax(i2t, 1) - torch.log(target + eps))).sum(1).mean()
    loss_t2i = (F.softmax(t2i, 1) * (F.log_softmax(t2i, 1) - torch.log(target + eps))).sum(1).mean()
    return loss_i2t + loss_t2i


def phrase_and_word(caption: str, rng: random.Random) -> tuple[str, str]:
    """A phrase (one of two comma chunks) and a word-level text (one comma segment), as `get_phrase_level_txt`."""
    sentences = [s for s in caption.split(".") if s.strip()] or [caption]
    segments = [s.strip() for s in rng.choice(sentences).split(",") if s.strip()] or [caption]
    longest = max(segments, key=len)
    rest = ", ".join(s for s in segments if s is not longest)
    chunks = [c for c in (longest, rest) if len(c) > 5] or [caption]
    return rng.choice(chunks), rng.choice(segments)


def drop_tokens(x: torch.Tensor, mask: torch.Tensor, percent: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BMM: remove 0..int(percent*N) random tokens (CLS kept) from every sample of the batch."""
    n = x.shape[1] - 1
    k = random.randint(0, int(percent * n))
    if k == 0:
        return x, mask
    keep = torch.rand(x.shape[0], n, device=x.device).argsort(1)[:, : n - k].sort(1).values + 1
    keep = torch.cat([torch.zeros_like(keep[:, :1]), keep], 1)
    return x.gather(1, keep[..., None].expand(-1, -1, x.shape[2])), mask.gather(1, keep)


class Block(nn.Module):
    """One self-attention shared by both modalities, one MLP per modality (BlockVisTxt)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2_vis, self.norm2_txt = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp_vis = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.mlp_txt = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=~mask.bool(), need_weights=False)[0]
        norm, mlp = (self.norm2_vis, self.mlp_vis) if modality == "vis" else (self.norm2_txt, self.mlp_txt)
        return x + mlp(norm(x))


@dataclass
class IVTConfig(Config):
    """IVT's own keys (see benchmark/FIDELITY.md, ## IVT)."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    patch: int = 16
    patch_stride: int = 12
    vocab_size: int = 30522
    bmm_percent: float = 0.2
    mla_levels: list = field(default_factory=lambda: ["sentence", "phrase", "word"])
    loss_weights: dict = field(default_factory=lambda: {"cmpm": 1.0})


class IVT(RetrievalModel):
    """IVT: shared-attention transformer, MLA (CMPM at three text levels) and BMM token dropping."""

    name = "ivt"
    description = "IVT (Shu et al. 2022): one shared transformer, multi-level alignment, bidirectional token dropping"
    config_class = IVTConfig
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)

    def __init__(self, cfg: IVTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embed = nn.Conv2d(3, d, cfg.patch, stride=cfg.patch_stride)
        self.grid = (cfg.image_size - cfg.patch) // cfg.patch_stride + 1
        self.cls_vis = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_vis = nn.Parameter(torch.randn(1, self.grid**2 + 1, d) * 0.02)
        self.word_embed = nn.Embedding(cfg.vocab_size, d)
        self.pos_txt = nn.Parameter(torch.randn(1, cfg.text_length, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)

    @classmethod
    def build(cls, cfg: IVTConfig, num_classes: int, workdir: Path):
        """A randomly initialised IVT and the offline CLIP tokenizer (BERT's is not reachable: see FIDELITY)."""
        from t2iverw.clip_tokenizer import build_clip_tokenizer

        tokenizer = build_clip_tokenizer(model_max_length=cfg.text_length)
        cfg.vocab_size = max(cfg.vocab_size, len(tokenizer))
        return cls(cfg), tokenizer

    @classmethod
    def from_run(cls, cfg: IVTConfig, num_classes: int, folder: Path):
        from transformers import AutoTokenizer

        return cls(cfg), AutoTokenizer.from_pretrained(folder)

    def save_run_files(self, tokenizer, folder: Path) -> None:
        tokenizer.save_pretrained(folder)

    @classmethod
    def train_texts(cls, caption: str, rng: random.Random) -> list[str]:
        phrase, word = phrase_and_word(caption, rng)
        return [word, phrase, caption]

    def _run(self, x: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        if self.training and self.cfg.bmm_percent > 0:
            x, mask = drop_tokens(x, mask, self.cfg.bmm_percent)
        for block in self.blocks:
            x = block(x, mask, modality)
        return self.norm(x)[:, 0]

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_vis.expand(len(x), -1, -1), x], 1) + self.pos_vis
        return self._run(x, torch.ones(x.shape[:2], dtype=torch.long, device=x.device), "vis")

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.word_embed(input_ids) + self.pos_txt[:, : input_ids.shape[1]]
        return self._run(x, attention_mask, "txt")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = self.image_features(batch["pixel_values"])
        text = self.text_features(batch["input_ids"], batch["attention_mask"])
        return {"cmpm": cmpm(image, text, batch["labels"])}

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(pixels).float(), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_features(input_ids, attention_mask).float(), dim=-1)
