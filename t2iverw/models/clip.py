"""Zero-shot CLIP: the pretrained image and text towers, untouched, as the floor every trained row must beat.

Features are CLIP's own: `get_image_features` (the pooled CLS after the final LayerNorm
and the visual projection) and `get_text_features` (the end-of-text state after the
final LayerNorm and the text projection), L2-normalised; transformers 5 returns them as
the `pooler_output` of the towers' outputs. Nothing is trained
(`trainable = False`); `t2iverw predict --model clip --clip PATH` builds it from
benchmark/configs/clip.yaml. No mask token is added and, at the native input size,
no position embedding is resized, so the weights are exactly the checkpoint's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from t2iverw.errors import T2IError
from t2iverw.models.backbones import resize_position_embeddings, save_random_clip
from t2iverw.models.base import RetrievalModel
from t2iverw.training.config import ClipBackboneConfig


@dataclass
class ClipConfig(ClipBackboneConfig):
    """Only the shared CLIP keys (`clip`, `random_clip`, `image_size`, `text_length`) matter to a zero-shot model."""


class ZeroShotCLIP(RetrievalModel):
    name = "clip"
    description = "zero-shot CLIP (no training): the pretrained towers' projected, normalised features"
    config_class = ClipConfig
    trainable = False

    def __init__(self, clip, cfg):
        super().__init__()
        self.clip = clip
        self.cfg = cfg

    @classmethod
    def build(cls, cfg, num_classes: int, workdir: Path) -> tuple[ZeroShotCLIP, object]:
        """The checkpoint `cfg.clip` (or a random CLIP of `cfg.random_clip`, written into `workdir`)."""
        source = save_random_clip(Path(workdir) / "clip_init", cfg.random_clip) if cfg.random_clip else cfg.clip
        return cls._load(source, cfg)

    @classmethod
    def from_run(cls, cfg, num_classes: int, folder: Path) -> tuple[ZeroShotCLIP, object]:
        return cls._load(folder, cfg)

    def save_run_files(self, tokenizer, folder: Path) -> None:
        self.clip.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    @classmethod
    def _load(cls, source, cfg) -> tuple[ZeroShotCLIP, object]:
        from transformers import AutoTokenizer, CLIPModel

        try:
            clip = CLIPModel.from_pretrained(str(source))
            tokenizer = AutoTokenizer.from_pretrained(str(source))
        except OSError as exc:
            raise T2IError(f"cannot load CLIP weights/tokenizer from {str(source)!r}: {exc}".splitlines()[0]) from None
        resize_position_embeddings(clip, cfg.image_size)
        return cls(clip, cfg).eval(), tokenizer

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        raise T2IError("zero-shot CLIP is not trained: use `t2iverw predict --model clip`")

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.get_image_features(pixel_values=pixels).pooler_output.float(), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(out.pooler_output.float(), dim=-1)
