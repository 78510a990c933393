"""What the models built around a Hugging Face CLIPModel share: loading, run files, the identity classifier."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from t2iverw.models.backbones import clip_from_run, load_clip, random_clip_source, save_clip_run_files
from t2iverw.models.base import RetrievalModel


class ClipBased(RetrievalModel):
    """A RetrievalModel whose backbone is `self.clip`: the run keeps the CLIP config and tokenizer.

    Subclasses build themselves in `around(clip, tokenizer, cfg, num_classes)` (default:
    `cls(clip, cfg, num_classes)`).
    """

    @classmethod
    def prepare(cls, cfg, workdir: Path) -> None:
        random_clip_source(cfg, workdir)

    @classmethod
    def build(cls, cfg, num_classes: int, workdir: Path):
        clip, tokenizer = load_clip(random_clip_source(cfg, workdir, write=False), cfg.image_size)
        return cls.around(clip, tokenizer, cfg, num_classes), tokenizer

    @classmethod
    def from_run(cls, cfg, num_classes: int, folder: Path):
        clip, tokenizer = clip_from_run(folder)
        return cls.around(clip, tokenizer, cfg, num_classes), tokenizer

    @classmethod
    def around(cls, clip, tokenizer, cfg, num_classes: int):
        return cls(clip, cfg, num_classes)

    def save_run_files(self, tokenizer, folder: Path) -> None:
        save_clip_run_files(self.clip, tokenizer, folder)


def identity_classifier(width: int, num_classes: int) -> nn.Linear:
    """IRRA's shared ID classifier over both modalities' features, with its initialisation (std 0.001, zero bias)."""
    classifier = nn.Linear(width, num_classes)
    nn.init.normal_(classifier.weight, std=0.001)
    nn.init.zeros_(classifier.bias)
    return classifier
