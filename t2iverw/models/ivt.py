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
from timm.layers import DropPath, Mlp
from torch import nn

from t2iverw.models.base import RetrievalModel
from t2iverw.training.config import Config


def cmpm(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cross-modal projection matching (Zhang & Lu 2018), both directions, as IVT's `cmps_loss.py`.

    The true-match row is divided by its L2 norm, not its sum (cmps_loss.py:48), so with c positives
    each target entry is 1/sqrt(c): the authors' choice, kept for fidelity.
    """
    match = (labels[:, None] == labels[None, :]).float()
    target = match / match.norm(dim=1, keepdim=True)
    t_norm = F.normalize(text, dim=-1)
    i_norm = F.normalize(image, dim=-1)
    i2t = image @ t_norm.t()
    t2i = text @ i_norm.t()
    loss_i2t = (F.softmax(i2t, 1) * (F.log_softmax(i2t, 1) - torch.log(target + eps))).sum(1).mean()
    loss_t2i = (F.softmax(t2i, 1) * (F.log_softmax(t2i, 1) - torch.log(target + eps))).sum(1).mean()
    return loss_i2t + loss_t2i


def phrase_and_word(caption: str, rng: random.Random) -> tuple[str, str]:
    """The phrase- and word-level texts of a caption, as the released code makes them.

    Phrase: `get_phrase_level_txt` (processor.py:59-76), one chunk drawn from the candidates of
    *all* sentences. Word: the authors draw attribute words from `cuhk_pedes_att.json` and, for a
    caption without attributes, a second draw by the same rule (`split_txt`, datasets/bases.py:194-216);
    no vehicle caption has an attribute file, so ours is that second draw. Both work on the
    lower-cased caption (bases.py:187). Where no chunk is longer than 5 characters theirs fails
    (`random.sample` of an empty list) and ours uses the whole caption, as bases.py:198-199 does
    for an empty word text.
    """
    caption = caption.lower()
    phrases, words = _chunks(caption.strip(".").strip("[").strip("]")), _chunks(caption.strip("."))
    return (rng.choice(phrases) if phrases else caption), (rng.choice(words) if words else caption)


def _chunks(text: str) -> list[str]:
    """Per sentence: its longest comma segment and the other segments re-joined, those over 5 characters."""
    pool = []
    for sentence in text.split("."):
        segments = sentence.split(",")
        longest = max(range(len(segments)), key=lambda k: len(segments[k]))  # the first longest, as np.argmax
        rest = (",".join(segments[:longest]) + "," + ",".join(segments[longest + 1:])).strip(",")
        pool += [c for c in (segments[longest], rest) if len(c) > 5]
    return [c.strip(" ") for c in pool if c]


def drop_tokens(x: torch.Tensor, mask: torch.Tensor, percent: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BMM as released (vit_vl.py:995-1006): one shuffle of positions 1..N-1 for the whole batch, with
    N counting CLS; the first k = randint(0, int(percent*N)) are dropped from every sample, CLS kept."""
    n = x.shape[1]
    order = list(range(1, n))
    random.shuffle(order)
    k = random.randint(0, int(percent * n))
    keep = torch.tensor([0] + order[k:], device=x.device)
    return x[:, keep], mask[:, keep]


class Block(nn.Module):
    """BlockVisTxt (vit_vl.py:466-488): shared norm1, attention and norm2; one MLP per modality.

    LayerNorm eps 1e-6 and qkv bias as the authors' ViT-B (vit_vl.py:1297-1299); drop-path is timm's.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_vis = Mlp(dim, hidden)
        self.mlp_txt = Mlp(dim, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, modality: str) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop_path(self.attn(h, h, h, key_padding_mask=~mask.bool(), need_weights=False)[0])
        mlp = self.mlp_vis if modality == "vis" else self.mlp_txt
        return x + self.drop_path(mlp(self.norm2(x)))


class TextEmbeddings(nn.Module):
    """BertEmbeddings (vit_vl.py:667-712): word + token type 0 + learned position, LayerNorm, dropout."""

    def __init__(self, vocab_size: int, dim: int, length: int, dropout: float = 0.1):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(length, dim)
        self.token_type_embeddings = nn.Embedding(2, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


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
    drop_path: float = 0.1
    vit: str | None = None
    bert: str | None = None
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
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid**2 + 1, d) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(1, self.grid**2 + 1, d) * 0.02)
        self.embeddings = TextEmbeddings(cfg.vocab_size, d, cfg.text_length)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=1e-6)

    @classmethod
    def build(cls, cfg: IVTConfig, num_classes: int, workdir: Path):
        """IVT with ViT/BERT weights where `vit`/`bert` are set (load_param_hybrid), else random.

        With `bert` the tokenizer is that BERT's, as the authors'; without it the offline CLIP one.
        """
        from transformers import AutoTokenizer

        from t2iverw.clip_tokenizer import build_clip_tokenizer
        from t2iverw.models.ivt_weights import load_bert, load_vit

        if cfg.bert:
            tokenizer = AutoTokenizer.from_pretrained(cfg.bert, model_max_length=cfg.text_length)
            cfg.vocab_size = len(tokenizer)
        else:
            tokenizer = build_clip_tokenizer(model_max_length=cfg.text_length)
            cfg.vocab_size = max(cfg.vocab_size, len(tokenizer))
        model = cls(cfg)
        if cfg.vit:
            load_vit(model, cfg.vit)
        if cfg.bert:
            load_bert(model, cfg.bert)
        return model, tokenizer

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
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed + self.type_embed
        return self._run(x, torch.ones(x.shape[:2], dtype=torch.long, device=x.device), "vis")

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        return self._run(x, attention_mask, "txt")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = self.image_features(batch["pixel_values"])
        text = self.text_features(batch["input_ids"], batch["attention_mask"])
        return {"cmpm": cmpm(image, text, batch["labels"])}

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(pixels).float(), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_features(input_ids, attention_mask).float(), dim=-1)
