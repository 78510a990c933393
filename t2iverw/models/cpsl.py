"""Part-level cross-modal correspondence (Park, Jeong, Kim, Kwak, arXiv 2501.00318): CLIP plus learned part slots.

Coarse embeddings are CLIP's image CLS and caption end-of-text states (SDM + ID, as
IRRA); fine embeddings are K part slots read from either modality by one shared decoder
(`part_slots.PartSlotDecoder`), trained with the paper's commonality-based margin
ranking loss (L_CMR, `cmr`). No part labels are used unless `part_supervision: masks`,
which adds `slot_mask`: slot k must attend inside our annotated part k, so "discovered"
and "annotated" parts compare on one architecture. No code of this paper is public; the
settings the paper does not give on the stored page are the same authors' PLOT code's or
marked as ours in benchmark/FIDELITY.md, each a config key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from t2iverw.errors import T2IError
from t2iverw.models import losses
from t2iverw.models.clip_based import ClipBased, identity_classifier
from t2iverw.models.part_slots import PartSlotDecoder
from t2iverw.training.config import ClipBackboneConfig
from t2iverw.training.distributed import gather

EPS = 1e-8


@dataclass
class CPSLConfig(ClipBackboneConfig):
    """The model's own keys; where each default comes from: benchmark/FIDELITY.md, "CPSL"."""

    num_slots: int = 8  # PLOT's --num_slots 8 (utils/options.py:45); the paper's K is not on the stored page
    slot_heads: int = 8
    slot_layers: int = 2  # slot transformer blocks after the shared cross-attention (ours)
    slot_ffn: int = 2048
    slot_dropout: float = 0.0
    cmr_margin: float = 0.2  # the margin between two parts nothing in common (ours)
    part_score_weight: float = 0.5  # retrieval score = (1 - w) global cosine + w mean part cosine (ours)
    part_supervision: str = "none"  # none: discovered parts (paper); masks: slot k attends inside part k
    temperature: float = 0.015  # PLOT utils/options.py:21
    loss_weights: dict = field(default_factory=lambda: {"sdm": 1.0, "id": 1.0, "cmr": 1.0, "slot_mask": 1.0})

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"part_supervision": ("none", "masks")}

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.part_score_weight <= 1:
            raise T2IError(f"part_score_weight must lie in [0, 1]; got {self.part_score_weight}")
        needed = {"sdm", "id", "cmr"} | ({"slot_mask"} if self.part_supervision == "masks" else set())
        missing = sorted(needed - set(self.loss_weights))
        if missing:
            raise T2IError(f"loss_weights lacks {missing[0]!r}")


def cmr(image_parts: torch.Tensor, text_parts: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Commonality-based margin ranking loss over (B, K, D) part embeddings of B image-caption pairs.

    Per slot k, s(i, j) is the cosine of image i's and caption j's part k. Every
    (anchor, positive, negative) triplet of identities is a hinge
    [m_k(a, n) - s(a, p) + s(a, n)]_+, image anchors against captions and caption anchors
    against images, averaged over the triplets of each direction, the two directions
    summed. The margin shrinks with the part's commonality between the two people,
    m_k(a, n) = margin * (1 - c_k(a, n)), c_k = clamp((image-image + caption-caption
    cosine of part k) / 2, 0, 1), held fixed (no gradient): a part two people share
    (the same black trousers, the same wheels) is not pushed apart as hard as one they do not.
    """
    v, t = F.normalize(image_parts, dim=-1), F.normalize(text_parts, dim=-1)
    sim = torch.einsum("ikd,jkd->kij", v, t)  # (K, images, captions)
    with torch.no_grad():
        common = ((torch.einsum("ikd,jkd->kij", v, v) + torch.einsum("ikd,jkd->kij", t, t)) / 2).clamp(0, 1)
    margins = margin * (1 - common)
    same = labels[:, None] == labels[None, :]
    return _ranking(sim, margins, same) + _ranking(sim.transpose(1, 2), margins.transpose(1, 2), same.t())


def _ranking(sim: torch.Tensor, margins: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Mean hinge over (slot, anchor row, positive column, negative column) triplets of `sim` (K, A, C)."""
    hinge = F.relu(margins[:, :, None, :] - sim[:, :, :, None] + sim[:, :, None, :])  # (K, anchor, pos, neg)
    valid = (same[:, :, None] & ~same[:, None, :]).to(hinge.dtype)
    count = valid.sum() * sim.shape[0]
    if count == 0:  # no negative in the batch: keep the graph connected so every rank runs the same backward
        return sim.sum() * 0.0
    return (hinge * valid).sum() / count


def slot_mask(attention: torch.Tensor, part_grid: torch.Tensor) -> torch.Tensor:
    """Slots on annotated parts: -log of the attention mass slot k puts inside part k's patches.

    `attention` (B, K, patches) from the image side of the decoder, rows summing to one;
    `part_grid` (B, P, gh, gw) with P <= K: slots P.. stay free. Averaged over the
    (image, part) pairs the image shows; a batch showing no part adds zero.
    """
    grid = part_grid.flatten(2).to(attention.dtype)
    present = part_grid.flatten(2).any(-1)
    inside = (attention[:, : grid.shape[1]] * grid).sum(-1)
    if not present.any():
        return attention.sum() * 0.0
    return -torch.log(inside[present].clamp(min=EPS)).mean()


class CPSL(ClipBased):
    name = "cpsl"
    description = "part-level correspondence (Park et al. 2024): CLIP + part slots shared by both modalities, L_CMR"
    config_class = CPSLConfig
    backbone_prefixes: ClassVar[tuple[str, ...]] = ("clip.",)

    def __init__(self, clip, cfg: CPSLConfig, num_classes: int):
        super().__init__()
        self.clip = clip
        self.clip.logit_scale.requires_grad_(False)  # a fixed scale 1 / temperature, as IRRA and PLOT
        self.cfg = cfg
        self.scale = 1.0 / cfg.temperature
        self.grid = cfg.image_size // clip.config.vision_config.patch_size
        width = clip.config.projection_dim
        if width % cfg.slot_heads:
            raise T2IError(f"slot_heads={cfg.slot_heads} does not divide the CLIP projection width {width}")
        self.classifier = identity_classifier(width, num_classes)
        self.part_decoder = PartSlotDecoder(width, cfg.num_slots, cfg.slot_heads, cfg.slot_layers, cfg.slot_ffn,
                                            cfg.slot_dropout)

    # --- the engine's hooks (loading and run files: ClipBased) ---------------------
    @classmethod
    def batch_needs(cls, cfg: CPSLConfig) -> frozenset[str]:
        return frozenset({"part_grid"}) if cfg.part_supervision == "masks" else frozenset()

    # --- encoders -----------------------------------------------------------------
    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 1 + patches, width): projected CLS and patch states."""
        vision = self.clip.vision_model
        hidden = vision(pixel_values=pixels).last_hidden_state
        return self.clip.visual_projection(vision.post_layernorm(hidden))

    def text_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, length, width): projected token states under CLIP's causal mask (as IRRA and PLOT encode text)."""
        return self.clip.text_projection(self.clip.text_model(input_ids=ids).last_hidden_state)

    @staticmethod
    def eot(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The end-of-text state: the last attended position."""
        last = mask.long().sum(dim=1) - 1
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]

    @staticmethod
    def word_padding(mask: torch.Tensor) -> torch.Tensor:
        """(B, length) True where the slots must not read: padding, start and end of text (PLOT
        ...detachRecon.py:275-289 keeps only the words); a caption with no word keeps its end of text."""
        padding = ~mask.bool()
        rows = torch.arange(mask.shape[0], device=mask.device)
        last = mask.long().sum(dim=1) - 1
        padding[:, 0] = True
        padding[rows, last] = True
        empty = padding.all(dim=1)
        padding[rows[empty], last[empty]] = False
        return padding

    def image_parts(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.part_decoder(img[:, 1:], "image")

    def text_parts(self, txt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.part_decoder(txt, "text", self.word_padding(mask))[0]

    def embedding(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """One unit vector whose dot products are (1 - w) global cosine + w mean part cosine."""
        w, k = self.cfg.part_score_weight, fine.shape[1]
        parts = F.normalize(fine.float(), dim=-1).flatten(1) * math.sqrt(w / k)
        return F.normalize(torch.cat([F.normalize(coarse.float(), dim=-1) * math.sqrt(1 - w), parts], dim=1), dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        img = self.image_tokens(pixels)
        return self.embedding(img[:, 0], self.image_parts(img)[0])

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        txt = self.text_tokens(input_ids)
        return self.embedding(self.eot(txt, attention_mask), self.text_parts(txt, attention_mask))

    # --- training -------------------------------------------------------------------
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Unweighted losses by name: sdm, id (coarse), cmr (fine), slot_mask (with part_supervision: masks)."""
        mask = batch["attention_mask"]
        img, txt = self.image_tokens(batch["pixel_values"]), self.text_tokens(batch["input_ids"])
        image_feat, text_feat = img[:, 0].float(), self.eot(txt, mask).float()
        image_parts, attention = self.image_parts(img)
        text_parts = self.text_parts(txt, mask)
        all_image, all_text, all_ip, all_tp, all_labels = gather(image_feat, text_feat, image_parts.float(),
                                                                 text_parts.float(), batch["labels"])
        out = {
            "sdm": losses.sdm(all_image, all_text, all_labels, self.scale),
            "id": losses.identity(self.classifier(image_feat), self.classifier(text_feat), batch["labels"]),
            "cmr": cmr(all_ip, all_tp, all_labels, self.cfg.cmr_margin),
        }
        if self.cfg.part_supervision == "masks":
            grid = batch["part_grid"]
            if grid.shape[1] > self.cfg.num_slots:
                raise T2IError(f"part_supervision: masks needs num_slots >= the {grid.shape[1]} annotated parts")
            out["slot_mask"] = slot_mask(attention.float(), grid)
        return out
