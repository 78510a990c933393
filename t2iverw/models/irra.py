"""IRRA (Jiang & Ye, CVPR 2023): CLIP with SDM, ID and cross-modal implicit relation reasoning (MLM).

The architecture is PFCVR's global branch, which the PFCVR authors took from IRRA's
code: the image CLS and text end-of-text features for SDM and a shared identity
classifier, and a cross-attention + 4-layer transformer that recovers masked caption
tokens from the image, for MLM only. So this module reuses PFCVR's encoders and MLM
branch and builds nothing else (no part decoder, no MIM decoder). Defaults are IRRA's
released `utils/options.py` and `run_irra.sh` (benchmark/FIDELITY.md, "IRRA").
The T2I-VeRW paper's own IRRA row is a different setting, the PFCVR code with PLFA and
BMRIA off: benchmark/configs/irra-pfcvr.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from t2iverw.errors import T2IError
from t2iverw.models import losses
from t2iverw.models.clip_based import identity_classifier
from t2iverw.models.bmria import MlmBranch
from t2iverw.models.pfcvr import PFCVR
from t2iverw.training.config import ClipBackboneConfig
from t2iverw.training.distributed import gather


@dataclass
class IRRAConfig(ClipBackboneConfig):
    """IRRA's own keys; defaults from its utils/options.py."""

    heads: int = 8  # cross-modal transformer heads (width 512 / 64)
    cmt_depth: int = 4  # --cmt_depth
    temperature: float = 0.02  # --temperature: SDM scale 50
    loss_weights: dict = field(default_factory=lambda: {"sdm": 1.0, "id": 1.0, "mlm": 1.0})  # --id/--mlm_loss_weight

    losses: ClassVar[tuple[str, ...]] = ("sdm", "id", "mlm")


class IRRA(PFCVR):
    name = "irra"
    description = "IRRA (CVPR 2023): CLIP + similarity distribution matching + ID + cross-modal masked language modelling"
    config_class = IRRAConfig

    def __init__(self, clip, cfg: IRRAConfig, num_classes: int):
        nn.Module.__init__(self)
        self.clip = clip
        self.clip.logit_scale.requires_grad_(False)  # IRRA's logit_scale is the constant 1 / temperature
        self.cfg = cfg
        self.scale = 1.0 / cfg.temperature
        width = clip.config.projection_dim
        if width % cfg.heads:
            raise T2IError(f"heads={cfg.heads} does not divide the CLIP projection width {width}")
        self.classifier = identity_classifier(width, num_classes)
        self.mlm = MlmBranch(width, cfg.heads, cfg.cmt_depth, clip.config.text_config.vocab_size)

    @classmethod
    def around(cls, clip, tokenizer, cfg: IRRAConfig, num_classes: int) -> IRRA:
        return cls(clip, cfg, num_classes)

    @classmethod
    def batch_needs(cls, cfg: IRRAConfig) -> frozenset[str]:
        return frozenset({"mlm"})

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        img = self.image_tokens(batch["pixel_values"])
        txt = self.text_tokens(batch["input_ids"])
        image_feat, text_feat = img[:, 0].float(), self.eot(txt, batch["attention_mask"]).float()
        all_image, all_text, all_labels = gather(image_feat, text_feat, batch["labels"])
        return {
            "sdm": losses.sdm(all_image, all_text, all_labels, self.scale),
            "id": losses.identity(self.classifier(image_feat), self.classifier(text_feat), batch["labels"]),
            "mlm": self.mlm_loss(img, batch),
        }
