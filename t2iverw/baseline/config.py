"""Training configuration: one dataclass, loaded from YAML, then overridden from the CLI.

Defaults are the paper's / released code's values (benchmark/configs/pfcvr.yaml spells
them out); unknown keys are an error so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from t2iverw.errors import T2IError


@dataclass
class Config:
    # backbone
    clip: str = "openai/clip-vit-base-patch16"  # hub id or local directory (CLIPModel + tokenizer)
    random_clip: dict | None = None  # CLIPConfig kwargs: train from a randomly initialised backbone instead
    image_size: int = 384  # position embeddings are interpolated to this input size
    text_length: int = 77
    # modules (Table V ablation: IRRA -> +PLFA -> +BMRIA -> +aug)
    plfa: bool = True
    bmria: bool = True
    aug: bool = True
    part_decoder_layers: int = 6
    heads: int = 8
    mlm_layers: int = 4
    mim_layers: int = 4
    mlm_ratio: float = 0.15
    mim_ratio: float = 0.25
    # losses
    temperature: float = 0.02  # fixed SDM / ITC scale 1/0.02
    loss_weights: dict = field(
        default_factory=lambda: {"sdm": 1.0, "id": 0.5, "part_itc": 0.2, "mlm": 0.5, "mim": 0.5}
    )
    # augmentation
    gamma_over: float = 0.5  # gamma < 1 brightens
    gamma_under: float = 2.0
    noise_sigma: float = 0.05  # on [0, 1] pixel values
    pad: int = 10
    erase_prob: float = 0.5
    # optimisation
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-5
    new_module_lr_factor: float = 5.0
    weight_decay: float = 4e-5
    warmup_epochs: int = 5
    warmup_factor: float = 0.1
    mixed_precision: str = "bf16"  # used only on CUDA; CPU runs in fp32
    num_workers: int = 4
    seed: int = 0
    # model selection on held-out *train* identities; the test split is never read
    val_ratio: float = 0.1
    eval_batch_size: int = 128

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Config from YAML `path` (or the defaults), then `overrides` (key -> value) on top."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise T2IError(f"config file {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise T2IError(f"config file {path} is not a YAML mapping")
    values.update(overrides or {})
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise T2IError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    return Config(**values)


def parse_override(text: str) -> tuple[str, object]:
    """'key=value' from `--set`, the value parsed as YAML (so 'epochs=3', 'aug=false' work)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise T2IError(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)
