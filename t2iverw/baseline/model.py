"""PFCVR: CLIP ViT-B/16 (IRRA's global alignment) plus PLFA and BMRIA.

`forward` returns a dict of named, unweighted losses; a switched-off module is never
built, so it neither computes a loss nor holds parameters.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2iverw.baseline import losses
from t2iverw.baseline.config import Config
from t2iverw.constants import PART_TEXT
from t2iverw.errors import T2IError

MASK_TOKEN = "<|mask|>"


def load_clip(source: str | Path, image_size: int):
    """CLIPModel and its tokenizer from a hub id or local directory, positions resized to `image_size`."""
    from transformers import AutoTokenizer, CLIPModel

    try:
        clip = CLIPModel.from_pretrained(str(source))
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except OSError as exc:
        raise T2IError(f"cannot load CLIP weights/tokenizer from {source!r}: {exc}".splitlines()[0]) from None
    resize_position_embeddings(clip, image_size)
    add_mask_token(clip, tokenizer)
    return clip, tokenizer


def save_random_clip(out: str | Path, clip_kwargs: dict) -> Path:
    """Write a randomly initialised CLIPModel (from CLIPConfig kwargs) and the offline CLIP tokenizer to `out`."""
    from transformers import CLIPConfig, CLIPModel

    from t2iverw.clip_tokenizer import build_clip_tokenizer

    torch.manual_seed(0)
    CLIPModel(CLIPConfig(**clip_kwargs)).save_pretrained(out)
    build_clip_tokenizer(out)
    return Path(out)


def resize_position_embeddings(clip, image_size: int) -> None:
    """Bicubically interpolate the vision position embeddings to `image_size` for good (IRRA does the same)."""
    emb = clip.vision_model.embeddings
    if emb.image_size == image_size:
        return
    if image_size % emb.patch_size:
        raise T2IError(f"image_size {image_size} is not a multiple of the patch size {emb.patch_size}")
    n = (image_size // emb.patch_size) ** 2
    with torch.no_grad():
        dummy = torch.zeros(1, n + 1, emb.embed_dim)
        weight = emb.interpolate_pos_encoding(dummy, image_size, image_size)[0]
    emb.position_embedding = nn.Embedding(n + 1, emb.embed_dim, _weight=weight.clone())
    emb.register_buffer("position_ids", torch.arange(n + 1).expand((1, -1)), persistent=False)
    emb.image_size, emb.num_patches, emb.num_positions = image_size, n, n + 1
    clip.config.vision_config.image_size = image_size


def add_mask_token(clip, tokenizer) -> None:
    """Give the tokenizer a mask token for MLM (CLIP has none) and grow the embeddings to match."""
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    old = clip.text_model.embeddings.token_embedding
    if old.num_embeddings >= len(tokenizer):
        return
    new = nn.Embedding(len(tokenizer), old.embedding_dim)
    with torch.no_grad():  # new rows start at the mean embedding, as transformers' mean_resizing does
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = old.weight.mean(dim=0)
    clip.text_model.embeddings.token_embedding = new
    clip.config.text_config.vocab_size = len(tokenizer)


class PFCVR(nn.Module):
    def __init__(self, clip, cfg: Config, num_classes: int, part_tokens: dict):
        super().__init__()
        self.clip = clip
        self.clip.logit_scale.requires_grad_(False)  # PFCVR uses the fixed scale 1 / temperature instead
        self.cfg = cfg
        self.scale = 1.0 / cfg.temperature
        self.patch_size = clip.config.vision_config.patch_size
        self.grid = cfg.image_size // self.patch_size
        width = clip.config.projection_dim
        if width % cfg.heads:
            raise T2IError(f"heads={cfg.heads} does not divide the CLIP projection width {width}")
        self.classifier = nn.Linear(width, num_classes)
        if cfg.plfa:
            self.part_queries = nn.Parameter(torch.randn(len(PART_TEXT), width) * width**-0.5)
            self.part_decoder = _decoder(width, cfg.heads, cfg.part_decoder_layers)
            self.register_buffer("part_ids", part_tokens["input_ids"], persistent=False)
            self.register_buffer("part_mask", part_tokens["attention_mask"].bool(), persistent=False)
        if cfg.bmria:
            vocab = clip.config.text_config.vocab_size
            self.mlm_cross = nn.MultiheadAttention(width, cfg.heads, batch_first=True)
            self.mlm_norm = nn.LayerNorm(width)
            layer = nn.TransformerEncoderLayer(width, cfg.heads, 4 * width, 0.0, "gelu", batch_first=True, norm_first=True)
            self.mlm_encoder = nn.TransformerEncoder(layer, cfg.mlm_layers, enable_nested_tensor=False)
            self.mlm_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, vocab))
            self.mim_token = nn.Parameter(torch.zeros(3, 1, 1))
            self.mim_decoder = _decoder(width, cfg.heads, cfg.mim_layers)
            self.mim_head = nn.Linear(width, 3 * self.patch_size**2)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.clip.parameters() if p.requires_grad]

    def new_parameters(self) -> list[nn.Parameter]:
        """The randomly initialised modules (classifier, PLFA, BMRIA), trained at a higher rate."""
        ids = {id(p) for p in self.clip.parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    # --- encoders --------------------------------------------------------------
    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 1 + patches, width): the projected CLS and patch tokens."""
        hidden = self.clip.vision_model(pixel_values=pixels).last_hidden_state
        return self.clip.visual_projection(self.clip.vision_model.post_layernorm(hidden))

    def text_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, length, width): the projected token states (final layer norm included)."""
        hidden = self.clip.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.clip.text_projection(hidden)

    @staticmethod
    def eot(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The end-of-text token's state: the last attended position (robust to an added mask token id)."""
        last = mask.long().sum(dim=1) - 1
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tokens(pixels)[:, 0].float(), dim=-1)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.eot(self.text_tokens(ids, mask), mask).float(), dim=-1)

    # --- training --------------------------------------------------------------
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Unweighted losses by name for one batch (see data.collate for the keys)."""
        img = self.image_tokens(batch["pixel_values"])
        txt = self.text_tokens(batch["input_ids"], batch["attention_mask"])
        image_feat, text_feat = img[:, 0].float(), self.eot(txt, batch["attention_mask"]).float()
        out = {
            "sdm": losses.sdm(image_feat, text_feat, batch["labels"], self.scale),
            "id": losses.identity(self.classifier(image_feat), self.classifier(text_feat), batch["labels"]),
        }
        if self.cfg.plfa:
            visual, textual, present = self.parts(img, txt, batch)
            out["part_itc"] = losses.part_itc(visual.float(), textual.float(), present, self.scale)
        if self.cfg.bmria:
            out["mlm"] = self.mlm_loss(img, batch)
            out["mim"] = self.mim_loss(txt, batch)
        return out

    def parts(self, img: torch.Tensor, txt: torch.Tensor, batch: dict):
        """PLFA: (visual, textual, present) part features, each (B, parts, width) / (B, parts)."""
        b, n_parts = txt.shape[0], self.part_queries.shape[0]
        part_txt = self.text_tokens(self.part_ids, self.part_mask)  # (parts, Lp, width)
        memory = torch.cat([part_txt[None].expand(b, -1, -1, -1), txt[:, None].expand(-1, n_parts, -1, -1)], dim=2)
        memory_mask = torch.cat(
            [self.part_mask[None].expand(b, -1, -1), batch["attention_mask"].bool()[:, None].expand(-1, n_parts, -1)], dim=2
        )
        queries = self.part_queries[None].expand(b, -1, -1).reshape(b * n_parts, 1, -1)
        textual = self.part_decoder(
            queries.to(memory.dtype),
            memory.reshape(b * n_parts, memory.shape[2], -1),
            memory_key_padding_mask=~memory_mask.reshape(b * n_parts, -1),
        ).reshape(b, n_parts, -1)
        grid = batch["part_grid"].flatten(2).to(img.dtype)  # (B, parts, patches)
        visual = grid @ img[:, 1:] / grid.sum(-1, keepdim=True).clamp(min=1)
        return visual, textual, batch["part_grid"].flatten(2).any(-1)

    def mlm_loss(self, img: torch.Tensor, batch: dict) -> torch.Tensor:
        """BMRIA text branch: masked caption tokens recovered with the help of the image tokens."""
        q = self.text_tokens(batch["mlm_ids"], batch["attention_mask"])
        kv = self.mlm_norm(img)
        x = q + self.mlm_cross(q, kv, kv, need_weights=False)[0]
        x = self.mlm_encoder(x, src_key_padding_mask=~batch["attention_mask"].bool())
        labels = batch["mlm_labels"]
        keep = labels != -100
        return losses.mlm(self.mlm_head(x[keep]).float(), labels[keep])

    def mim_loss(self, txt: torch.Tensor, batch: dict) -> torch.Tensor:
        """BMRIA image branch: masked patches' pixels regressed from the visible ones plus the caption."""
        pixels = batch["pixel_values"]
        b, p, g = pixels.shape[0], self.patch_size, self.grid
        n_mask = max(1, round(self.cfg.mim_ratio * g * g))
        order = torch.rand(b, g * g, device=pixels.device).argsort(dim=1)
        masked = torch.zeros(b, g * g, device=pixels.device)
        masked.scatter_(1, order[:, :n_mask], 1.0)
        cover = masked.reshape(b, 1, g, 1, g, 1).expand(-1, -1, -1, p, -1, p).reshape(b, 1, g * p, g * p)
        tokens = self.image_tokens(pixels * (1 - cover) + self.mim_token * cover)[:, 1:]
        x = self.mim_decoder(tokens, txt, memory_key_padding_mask=~batch["attention_mask"].bool())
        target = pixels.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * 3)
        return losses.mim(self.mim_head(x).float(), target.float(), masked)


def _decoder(width: int, heads: int, layers: int) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(width, heads, 4 * width, 0.0, "gelu", batch_first=True, norm_first=True)
    return nn.TransformerDecoder(layer, layers)


def build_model(clip, tokenizer, cfg: Config, num_classes: int) -> PFCVR:
    """PFCVR around a loaded CLIP; the part texts ("Car windows", ...) are tokenised once here."""
    part_tokens = tokenizer(list(PART_TEXT), padding=True, return_tensors="pt")
    return PFCVR(clip, cfg, num_classes, dict(part_tokens))
