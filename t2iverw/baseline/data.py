"""From the exported dataset to model batches: splits, tokens, augmentation, part grids.

The export (`t2iverw export`) is read with `datasets.load_dataset`. Part grids are stored
on the 24x24 grid of a 384-pixel ViT-B/16 input; they are carried through the same
flips and crops as the image and pooled onto the model's patch grid (a cell is on when
any part of it is), so a smaller model input still gets its part masks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from t2iverw.baseline.config import Config
from t2iverw.constants import PARTS
from t2iverw.errors import T2IError

COLUMNS = ["image", "image_id", "vehicle_id", "caption_id", "caption", "part_grid"]
VARIANTS = ("original", "over_exposed", "under_exposed", "noisy")


def load_export(source: str):
    """The exported DatasetDict (a local export directory or a hub id), heavy columns dropped."""
    import datasets

    try:
        dsd = datasets.load_dataset(str(source))
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise T2IError(f"cannot load dataset {source!r} (run `t2iverw export` first): {exc}".splitlines()[0]) from None
    for split in ("train", "test"):
        if split not in dsd:
            raise T2IError(f"dataset {source!r} has no {split!r} split")
        missing = sorted(set(COLUMNS) - set(dsd[split].column_names))
        if missing:
            raise T2IError(f"dataset {source!r} split {split!r} lacks column {missing[0]!r}")
    return {split: dsd[split].select_columns(COLUMNS) for split in ("train", "test")}


@dataclass
class TrainSplit:
    """Training rows (with captions) of the fit identities, and the held-out validation rows."""

    fit: object  # datasets.Dataset
    val: object  # datasets.Dataset (all rows of the held-out identities)
    classes: list[str]  # vehicle ids of the fit rows; label = index here


def split_train(train, val_ratio: float, seed: int) -> TrainSplit:
    """Hold out `val_ratio` of the train identities for model selection (the test split is never used)."""
    ids = sorted(set(train["vehicle_id"]))
    n_val = round(val_ratio * len(ids)) if val_ratio > 0 else 0
    n_val = min(max(n_val, 1 if val_ratio > 0 else 0), len(ids) - 1)
    val_ids = set(random.Random(seed).sample(ids, n_val))
    vids, captions = train["vehicle_id"], train["caption"]
    fit_rows = [i for i, (v, c) in enumerate(zip(vids, captions)) if v not in val_ids and c]
    if not fit_rows:
        raise T2IError("the train split has no captioned images; run `t2iverw caption` before exporting")
    val_rows = [i for i, v in enumerate(vids) if v in val_ids]
    fit = train.select(fit_rows)
    return TrainSplit(fit=fit, val=train.select(val_rows), classes=sorted(set(fit["vehicle_id"])))


def tokenize(tokenizer, texts: list[str], length: int) -> dict[str, torch.Tensor]:
    return tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, tokenizer, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style MLM masking of a *copy* of `ids` (80% mask token, 10% random, 10% kept).

    Returns (masked ids, labels with -100 where nothing is predicted). The input tensor is
    never modified: SDM and ID use it unmasked (IRRA's in-place bug).
    """
    ids = ids.clone()
    special = torch.tensor(tokenizer.all_special_ids)
    candidates = attention.bool() & ~torch.isin(ids, special)
    chosen = candidates & (torch.rand(ids.shape) < ratio)
    if candidates.any() and not chosen.any():  # always predict at least one token
        chosen[candidates.nonzero()[torch.randint(int(candidates.sum()), (1,))].squeeze(0).unbind()] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape)
    ids[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_ids = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[random_ids] = torch.randint(int(special.min()), (int(random_ids.sum()),))  # CLIP's special tokens come last
    return ids, labels


def pool_grid(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(parts, H, W) mask -> (parts, grid, grid) bool: a cell is on when the part touches it."""
    return F.adaptive_max_pool2d(mask.float()[None], grid)[0] > 0


class TrainImages(Dataset):
    """Augmented training samples; with `cfg.aug` every row also appears as 3 photometric copies."""

    def __init__(self, rows, classes: list[str], tokenizer, cfg: Config, patch_size: int):
        self.rows, self.tokenizer, self.cfg = rows, tokenizer, cfg
        self.label = {v: i for i, v in enumerate(classes)}
        self.grid = cfg.image_size // patch_size
        self.copies = len(VARIANTS) if cfg.aug else 1
        size = cfg.image_size
        self.geometric = v2.Compose(
            [v2.Resize((size, size), antialias=True), v2.RandomHorizontalFlip(), v2.Pad(cfg.pad), v2.RandomCrop(size)]
        )
        self.noise = v2.GaussianNoise(sigma=cfg.noise_sigma)
        self.normalize = v2.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        self.erase = v2.RandomErasing(p=cfg.erase_prob, value=0)

    def __len__(self) -> int:
        return len(self.rows) * self.copies

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index // self.copies]
        image = tv_tensors.Image(v2.functional.pil_to_tensor(row["image"].convert("RGB")))
        h, w = image.shape[-2:]
        parts = torch.tensor(row["part_grid"], dtype=torch.bool) if row["part_grid"] else torch.zeros(len(PARTS), 1, 1, dtype=torch.bool)
        parts = tv_tensors.Mask(F.interpolate(parts[None].float(), size=(h, w), mode="nearest")[0].bool())
        image, parts = self.geometric(image, parts)
        pixels = self.photometric(v2.functional.to_dtype(image, torch.float32, scale=True), index % self.copies)
        tokens = tokenize(self.tokenizer, [row["caption"]], self.cfg.text_length)
        ids, attention = tokens["input_ids"][0], tokens["attention_mask"][0]
        mlm_ids, mlm_labels = mask_tokens(ids, attention, self.tokenizer, self.cfg.mlm_ratio)
        return {
            "pixel_values": self.erase(self.normalize(pixels)).as_subclass(torch.Tensor),
            "input_ids": ids,
            "attention_mask": attention,
            "mlm_ids": mlm_ids,
            "mlm_labels": mlm_labels,
            "part_grid": pool_grid(parts.as_subclass(torch.Tensor), self.grid),
            "labels": torch.tensor(self.label[row["vehicle_id"]]),
        }

    def photometric(self, pixels: torch.Tensor, variant: int) -> torch.Tensor:
        """The paper's extra copies: gamma over-/under-exposure and Gaussian noise (variant 0 is the original)."""
        name = VARIANTS[variant]
        if name == "over_exposed":
            return v2.functional.adjust_gamma(pixels, self.cfg.gamma_over)
        if name == "under_exposed":
            return v2.functional.adjust_gamma(pixels, self.cfg.gamma_under)
        if name == "noisy":
            return self.noise(pixels)
        return pixels


class EvalImages(Dataset):
    """Resized, normalised images in row order, for encoding a gallery."""

    def __init__(self, rows, image_size: int):
        self.rows = rows
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((image_size, image_size), antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.rows[index]["image"].convert("RGB")).as_subclass(torch.Tensor)
