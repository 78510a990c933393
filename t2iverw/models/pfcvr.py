"""PFCVR: CLIP ViT-B/16 (IRRA's global alignment) plus PLFA and BMRIA.

`forward` returns a dict of named, unweighted losses; a switched-off module is never
built, so it neither computes a loss nor holds parameters. The paper's readings of PLFA
(`plfa_memory`, `part_pool`, `part_loss`) and MIM (`mim_mask`) are config switches; the
defaults are the released code's (benchmark/FIDELITY.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from t2iverw.constants import PART_TEXT
from t2iverw.errors import T2IError
from t2iverw.models import losses
from t2iverw.models.clip_based import ClipBased, identity_classifier
from t2iverw.models.bmria import MimBranch, MlmBranch
from t2iverw.models.plfa import LearnedPool, PartDecoder, mean_pool
from t2iverw.training.config import ClipBackboneConfig
from t2iverw.training.distributed import gather

LOSSES = ("sdm", "id", "part", "mlm", "mim")


@dataclass
class PFCVRConfig(ClipBackboneConfig):
    """PFCVR's own keys; the defaults are the released code's (benchmark/configs/pfcvr.yaml)."""

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "plfa_memory": ("image", "caption"),
        "part_pool": ("learned", "mean"),
        "part_loss": ("within_image", "batch"),
    }

    # modules (the paper's ablation: IRRA -> +PLFA -> +BMRIA -> +aug)
    plfa: bool = True
    bmria: bool = True
    heads: int = 8
    # PLFA
    plfa_memory: str = "image"  # image: image CLS + part text (code); caption: part text + caption (paper)
    part_pool: str = "learned"  # learned 1x1 conv over the patches (code); mean of the part's patches
    part_loss: str = "within_image"  # BCE over one image's parts (code); batch: contrast across images
    part_decoder_layers: int = 6
    part_ffn: int = 2048
    part_dropout: float = 0.1
    # BMRIA
    mlm_layers: int = 4
    mim_layers: int = 4
    mim_head_dim: int = 96
    # losses
    temperature: float = 0.07  # fixed SDM / part scale 1/0.07
    loss_weights: dict = field(default_factory=lambda: {"sdm": 1.0, "id": 0.5, "part": 0.2, "mlm": 0.5, "mim": 0.5})

    losses: ClassVar[tuple[str, ...]] = LOSSES


class PFCVR(ClipBased):
    name = "pfcvr"
    description = "PFCVR (T2I-VeRW paper): CLIP + IRRA's SDM/ID + part-level alignment on SAM3 masks (PLFA) + BMRIA"
    config_class = PFCVRConfig

    def __init__(self, clip, cfg: PFCVRConfig, num_classes: int, part_tokens: dict):
        super().__init__()
        self.clip = clip
        self.clip.logit_scale.requires_grad_(False)  # PFCVR uses the fixed scale 1 / temperature instead
        self.cfg = cfg
        self.scale = 1.0 / cfg.temperature
        self.patch_size = clip.config.vision_config.patch_size
        self.grid = cfg.image_size // self.patch_size
        patches = self.grid**2
        width = clip.config.projection_dim
        if width % cfg.heads:
            raise T2IError(f"heads={cfg.heads} does not divide the CLIP projection width {width}")
        self.classifier = identity_classifier(width, num_classes)
        if cfg.plfa:
            self.part_queries = nn.Embedding(len(PART_TEXT), width)
            self.part_decoder = PartDecoder(width, cfg.heads, cfg.part_decoder_layers, cfg.part_ffn, cfg.part_dropout)
            if cfg.part_pool == "learned":
                self.part_pool = LearnedPool(patches)
            self.register_buffer("part_ids", part_tokens["input_ids"], persistent=False)
            self.register_buffer("part_mask", part_tokens["attention_mask"].bool(), persistent=False)
        if cfg.bmria:
            self.mlm = MlmBranch(width, cfg.heads, cfg.mlm_layers, clip.config.text_config.vocab_size)
            self.mim = MimBranch(width, cfg.heads, cfg.mim_head_dim, cfg.mim_layers, patches, 3 * self.patch_size**2)

    # --- the engine's contract (loading and run files: ClipBased) ------------------
    @classmethod
    def around(cls, clip, tokenizer, cfg: PFCVRConfig, num_classes: int) -> PFCVR:
        return build_model(clip, tokenizer, cfg, num_classes)

    @classmethod
    def batch_needs(cls, cfg: PFCVRConfig) -> frozenset[str]:
        return frozenset((["part_grid"] if cfg.plfa else []) + (["mlm", "mim"] if cfg.bmria else []))

    # --- encoders --------------------------------------------------------------
    def image_tokens(self, pixels: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1 + patches, width): the projected CLS and patch tokens.

        With `kept` (B, n) patch indices, only CLS and those patches enter the encoder
        (MAE-style: hidden patches are dropped, not replaced).
        """
        vision = self.clip.vision_model
        x = vision.embeddings(pixels)
        if kept is not None:
            patches = x[:, 1:].gather(1, kept[..., None].expand(-1, -1, x.shape[-1]))
            x = torch.cat([x[:, :1], patches], dim=1)
        hidden = vision.encoder(inputs_embeds=vision.pre_layrnorm(x)).last_hidden_state
        return self.clip.visual_projection(vision.post_layernorm(hidden))

    def text_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, length, width): projected token states under CLIP's causal mask only, as the released
        code encodes text (the end-of-text state does not depend on the padding after it)."""
        hidden = self.clip.text_model(input_ids=ids).last_hidden_state
        return self.clip.text_projection(hidden)

    @staticmethod
    def eot(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The end-of-text token's state: the last attended position (robust to an added mask token id)."""
        last = mask.long().sum(dim=1) - 1
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tokens(pixels)[:, 0].float(), dim=-1)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.eot(self.text_tokens(ids), mask).float(), dim=-1)

    # --- training --------------------------------------------------------------
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Unweighted losses by name for one batch (see data.collate for the keys)."""
        img = self.image_tokens(batch["pixel_values"])
        txt = self.text_tokens(batch["input_ids"])
        image_feat, text_feat = img[:, 0].float(), self.eot(txt, batch["attention_mask"]).float()
        all_image, all_text, all_labels = gather(image_feat, text_feat, batch["labels"])
        out = {
            "sdm": losses.sdm(all_image, all_text, all_labels, self.scale),
            "id": losses.identity(self.classifier(image_feat), self.classifier(text_feat), batch["labels"]),
        }
        if self.cfg.plfa:
            visual, textual, present = self.parts(img, txt, batch)
            part_loss = losses.part_within_image if self.cfg.part_loss == "within_image" else losses.part_batch
            out["part"] = part_loss(visual.float(), textual.float(), present, self.scale)
        if self.cfg.bmria:
            out["mlm"] = self.mlm_loss(img, batch)
            out["mim"] = self.mim_loss(txt, batch)
        return out

    def parts(self, img: torch.Tensor, txt: torch.Tensor, batch: dict):
        """PLFA: (visual, textual, present) part features, (B, parts, width) twice and (B, parts)."""
        grid = batch["part_grid"].flatten(2)  # (B, parts, patches)
        present = grid.any(-1)
        tokens = img[:, 1:]
        visual = self.part_pool(tokens, grid) if self.cfg.part_pool == "learned" else mean_pool(tokens, grid)
        if self.cfg.plfa_memory == "image":
            textual = self._queries_on_image(img[:, 0], present)
        else:
            textual = self._queries_on_caption(txt, batch["attention_mask"].bool())
        return visual, textual, present

    def _queries_on_image(self, cls: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The released memory: one token per part the image shows, image CLS + that part text's mean state."""
        part_txt = self.text_tokens(self.part_ids).mean(dim=1)  # (parts, width), every position (released)
        memory = cls[:, None] + part_txt[None].to(cls.dtype)
        padding = ~present & present.any(dim=1, keepdim=True)  # an image showing no part attends to all (unused)
        queries = self.part_queries.weight[None].expand(cls.shape[0], -1, -1).to(memory.dtype)
        return self.part_decoder(queries, memory, padding)

    def _queries_on_caption(self, txt: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
        """The paper's memory: each part query reads its part text and the whole caption."""
        b, n_parts = txt.shape[0], self.part_ids.shape[0]
        part_txt = self.text_tokens(self.part_ids)  # (parts, Lp, width)
        memory = torch.cat([part_txt[None].expand(b, -1, -1, -1), txt[:, None].expand(-1, n_parts, -1, -1)], dim=2)
        keep = torch.cat([self.part_mask[None].expand(b, -1, -1), caption_mask[:, None].expand(-1, n_parts, -1)], dim=2)
        queries = self.part_queries.weight[None].expand(b, -1, -1).reshape(b * n_parts, 1, -1).to(memory.dtype)
        out = self.part_decoder(queries, memory.flatten(0, 1), ~keep.flatten(0, 1))
        return out.view(b, n_parts, -1)

    def mlm_loss(self, img: torch.Tensor, batch: dict) -> torch.Tensor:
        """BMRIA text branch: masked caption tokens recovered from where they look in the image."""
        features = self.mlm(self.text_tokens(batch["mlm_ids"]), img)
        labels = batch["mlm_labels"]
        keep = labels != -100
        return losses.mlm(self.mlm.head(features[keep]).float(), labels[keep])

    def mim_loss(self, txt: torch.Tensor, batch: dict) -> torch.Tensor:
        """BMRIA image branch: hidden patches' pixels regressed from the visible ones and the caption."""
        pixels, hidden = batch["pixel_values"], batch["mim_hidden"].flatten(1)
        b, p, g = pixels.shape[0], self.patch_size, self.grid
        kept = (~hidden).nonzero()[:, 1].view(b, -1)
        pred = self.mim(self.image_tokens(pixels, kept), kept, txt)
        target = pixels.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * 3)
        return losses.mim(pred.float(), target.float(), hidden)


def build_model(clip, tokenizer, cfg: PFCVRConfig, num_classes: int) -> PFCVR:
    """PFCVR around a loaded CLIP; the part texts ("Car windows", ...) are tokenised once here."""
    part_tokens = tokenizer(list(PART_TEXT), padding="max_length", max_length=cfg.text_length, truncation=True,
                            return_tensors="pt")
    return PFCVR(clip, cfg, num_classes, dict(part_tokens))
