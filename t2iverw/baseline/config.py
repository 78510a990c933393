"""Training configuration: one dataclass, loaded from YAML, then overridden from the CLI.

Defaults are the paper's / released code's values (benchmark/configs/pfcvr.yaml spells
them out); unknown keys are an error so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from t2iverw.errors import T2IError

CONFIGS = Path(str(importlib.resources.files("t2iverw.configs")))  # benchmark/configs, shipped in the wheel
PFCVR_CONFIG = CONFIGS / "pfcvr.yaml"  # the paper's defaults
TINY_CONFIG = CONFIGS / "tiny.yaml"  # a tiny CPU model trained from scratch (tests, demo)


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
    defaults = Config()
    return Config(**{k: _typed(k, v, getattr(defaults, k)) for k, v in values.items()})


def _typed(key: str, value: object, default: object) -> object:
    """`value` checked against the default's type; numbers written like '1e-3' (a YAML string) become floats."""
    if default is None:  # random_clip: a mapping of CLIPConfig kwargs, checked by transformers
        return value
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(default, (int, float)) and not isinstance(value, bool):
            number = type(default)(value)
            if isinstance(default, int) and number != float(value):
                raise ValueError
            return number
        if isinstance(value, type(default)):
            return value
    except (TypeError, ValueError):
        pass
    raise T2IError(f"config key {key!r} expects a {type(default).__name__}, got {value!r}")


def parse_override(text: str) -> tuple[str, object]:
    """'key=value' from `--set`, the value parsed as YAML (so 'epochs=3', 'aug=false' work)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise T2IError(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)
