"""What every contestant implements, so that one engine trains, predicts, evaluates and searches with any of them.

A model is one module of `t2iverw.models` (registered by name in `t2iverw.models.MODELS`)
holding one `RetrievalModel` subclass and its config dataclass. The engine
(`t2iverw.training`) owns everything else: data, optimiser, schedule, distributed
training, checkpoints, model selection, prediction and the run summary.

The contract, in the order the engine uses it:

- `config_class`: a dataclass subclass of `t2iverw.training.config.Config` (the shared
  keys: data, optimisation, schedule, selection, precision, `model`, `loss_weights`)
  adding this model's own keys. A YAML config names its model with `model: NAME`.
- `prepare(cfg, workdir)`: run once, on the main process only, before `build`; writes
  anything every process must then read (a randomly initialised tiny backbone, for
  example, into `workdir / "backbone_init"`).
- `build(cfg, num_classes, workdir)`: the model with its pretrained (or tiny random)
  backbone, and its Hugging Face tokenizer, for training.
- `save_run_files(tokenizer, folder)` / `from_run(cfg, num_classes, folder)`: what
  `predict` needs besides the weights (backbone config, tokenizer), and the architecture
  rebuilt from it; the engine then loads `model.safetensors` into it.
- `batch_needs(cfg)`: the optional batch fields the loader must produce (`NEEDS`); a
  model asking for "mim" or "part_grid" has an int attribute `grid` (patches per side).
- `backbone_prefixes`: parameter-name prefixes of the pretrained backbone, which
  `lr_groups: new_modules` keeps at the base rate.
- `train_texts(caption, rng)`: the texts a training item's caption becomes (default: the
  caption alone); each is one sample of the item, all in one batch like the augmented
  copies (IVT's sentence, phrase and word levels).
- `forward(batch)`: a dict of named **unweighted** losses; the engine weights them with
  `cfg.loss_weights` (a returned name without a weight is an error).
- `encode_image(pixels)` / `encode_text(input_ids, attention_mask)`: L2-normalised
  float32 features for retrieval (cosine similarity = dot product).

Core batch fields, always present: `pixel_values` (B, 3, H, W) normalised with the
class's `image_mean` / `image_std`; `input_ids`, `attention_mask` (B, text_length);
`labels` (B,) contiguous identity labels; `item` (B,) the index of the training item
(copies and text expansions of one item share it).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# Optional batch fields a model may ask the loader for (batch_needs):
#   "mlm": mlm_ids, mlm_labels (B, L): BERT-style 80/10/10 masking of a *copy* of input_ids
#   "mim": mim_hidden (B, gh, gw) bool: patches hidden from the image encoder
#   "part_grid": part_grid (B, parts, gh, gw) bool: the annotated part grids on the model's patch grid
NEEDS = ("mlm", "mim", "part_grid")


class RetrievalModel(nn.Module):
    """One contestant of the benchmark (see the module docstring for the contract)."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, shown by `t2iverw models`
    config_class: ClassVar[type]
    backbone_prefixes: ClassVar[tuple[str, ...]] = ("clip.",)
    trainable: ClassVar[bool] = True  # False: zero-shot (`predict --model NAME` with no run)
    image_mean: ClassVar[tuple[float, ...]] = tuple(OPENAI_CLIP_MEAN)
    image_std: ClassVar[tuple[float, ...]] = tuple(OPENAI_CLIP_STD)

    @classmethod
    def prepare(cls, cfg, workdir: Path) -> None:
        """Main process only, before `build`: write what every process reads (default: nothing)."""

    @classmethod
    def build(cls, cfg, num_classes: int, workdir: Path) -> tuple[RetrievalModel, Any]:
        """(model, tokenizer) for training, with the pretrained (or tiny random) backbone."""
        raise NotImplementedError

    @classmethod
    def from_run(cls, cfg, num_classes: int, folder: Path) -> tuple[RetrievalModel, Any]:
        """(model, tokenizer) rebuilt from `save_run_files` output; weights are loaded by the engine."""
        raise NotImplementedError

    def save_run_files(self, tokenizer, folder: Path) -> None:
        """Write the backbone config and tokenizer that `from_run` reads."""
        raise NotImplementedError

    @classmethod
    def batch_needs(cls, cfg) -> frozenset[str]:
        return frozenset()

    @classmethod
    def train_texts(cls, caption: str, rng: random.Random) -> list[str]:
        return [caption]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
