"""From the exported dataset to model batches: splits, caption items, augmentation, masks.

A local export is read straight from its Parquet shards (nothing is copied into the
Hugging Face cache); a hub id, or any source with `cache_dir`, goes through
`datasets.load_dataset`. The authors train on every (image, caption) pair, so a training
item is one caption of one image.

Part grids and the MIM seed are stored on the 24x24 grid of a 384-pixel ViT-B/16
input. They go through the same flip and crop as their image (the released code flips
the image but not its masks; we do not copy that) and are pooled onto the model's patch
grid (a cell is on when any part of it is), so a smaller model input still gets them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from t2iverw.training.config import Config
from t2iverw.training.masking import mask_tokens, mim_cells
from t2iverw.constants import AUGMENTED, GRID, PARTS, caption_list, query_id
from t2iverw.errors import T2IError

COLUMNS = ["image", "image_id", "vehicle_id", "caption_id", "caption", "captions", "part_grid", "mim_seed"]
COPY_COLUMNS = [f"image_{name}" for name in AUGMENTED]  # the release's precomputed dark, light, noisy copies
VARIANTS = ("original", *AUGMENTED)  # the released stack order: original, dark, light, noisy
TOKENIZE_BATCH = 4096  # captions per tokenizer call when TrainImages tokenizes its items up front


def load_split(source: str | Path, split: str, columns: list[str] | None = None, cache_dir: str | None = None,
               optional: list[str] | tuple = ()):
    """One split of an export as a `datasets.Dataset` with only `columns` (default: COLUMNS),
    plus those of `optional` that the export has."""
    columns = columns or COLUMNS
    local = Path(source)
    if cache_dir is None and local.is_dir() and (local / "data").is_dir():
        ds = _read_parquet(local, split, [*columns, *optional])
    else:
        ds = _load_dataset(str(source), split, cache_dir)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise T2IError(f"dataset {str(source)!r} split {split!r} lacks column {missing[0]!r}")
    return ds.select_columns(columns + [c for c in optional if c in ds.column_names])


def _read_parquet(root: Path, split: str, columns: list[str]):
    """The split's shards as one in-memory Arrow table; the features come from the shards' own metadata."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    files = sorted((root / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise T2IError(f"dataset {str(root)!r} has no {split!r} split (no data/{split}-*.parquet)")
    try:
        present = set(pq.read_schema(files[0]).names)
        table = pa.concat_tables([pq.read_table(f, columns=[c for c in columns if c in present]) for f in files])
    except (pa.ArrowInvalid, OSError) as exc:
        raise T2IError(f"cannot read {root} split {split!r}: {exc}".splitlines()[0]) from None
    return datasets.Dataset(InMemoryTable(table))


def _load_dataset(source: str, split: str, cache_dir: str | None):
    import datasets

    try:
        return datasets.load_dataset(source, split=split, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise T2IError(f"cannot load dataset {source!r} (run `t2iverw export` first): {exc}".splitlines()[0]) from None


@dataclass
class TrainSplit:
    """Training items of the fit identities, and the held-out validation rows."""

    fit: object  # datasets.Dataset: rows of the fit identities that have a caption
    items: list[tuple[int, int]]  # (row in fit, caption index): one per image-caption pair
    val: object  # datasets.Dataset: all rows of the held-out identities
    classes: list[str]  # vehicle ids of the fit rows; label = index here


def split_train(train, val_ratio: float, seed: int) -> TrainSplit:
    """Hold out `val_ratio` of the train identities for model selection (the test split is never used)."""
    ids = sorted(set(train["vehicle_id"]))
    n_val = min(max(round(val_ratio * len(ids)), 1), len(ids) - 1) if val_ratio > 0 else 0
    val_ids = set(random.Random(seed).sample(ids, n_val))
    texts = [caption_list(cs, c) for cs, c in zip(train["captions"], train["caption"])]
    vids = train["vehicle_id"]
    fit_rows = [i for i, (v, t) in enumerate(zip(vids, texts)) if v not in val_ids and any(t)]
    if not fit_rows:
        raise T2IError("the train split has no captioned images; run `t2iverw caption` before exporting")
    items = [(j, k) for j, i in enumerate(fit_rows) for k, text in enumerate(texts[i]) if text]  # no empty captions
    fit = train.select(fit_rows)
    val = train.select([i for i, v in enumerate(vids) if v in val_ids])
    return TrainSplit(fit=fit, items=items, val=val, classes=sorted(set(fit["vehicle_id"])))


def tokenize(tokenizer, texts: list[str], length: int) -> dict[str, torch.Tensor]:
    return tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")


def pool_grid(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(channels, H, W) mask -> (channels, grid, grid) bool: a cell is on when the mask touches it."""
    return F.adaptive_max_pool2d(mask.float()[None], grid)[0] > 0


def photometric(pixels: torch.Tensor, variant: str, cfg: Config) -> torch.Tensor:
    """A generated copy of [0, 1] pixels: dark = pixels ** gamma_dark, light = pixels ** gamma_light,
    noisy = pixels + N(0, noise_sigma) clipped to [0, 1]; the original is returned as is."""
    if variant == "dark":
        return v2.functional.adjust_gamma(pixels, cfg.gamma_dark)
    if variant == "light":
        return v2.functional.adjust_gamma(pixels, cfg.gamma_light)
    if variant == "noisy":
        return v2.functional.gaussian_noise(pixels, sigma=cfg.noise_sigma, clip=True)
    return pixels


def check_copies(rows, cfg: Config) -> None:
    """`aug_source: release` needs the export's precomputed copies: say so in one line when they are absent."""
    if cfg.aug and cfg.aug_source == "release":
        missing = [c for c in COPY_COLUMNS if c not in rows.column_names]
        if missing:
            raise T2IError(f"aug_source: release needs the export's {', '.join(COPY_COLUMNS)} columns (export "
                           f"with --augmented-copies; {missing[0]} is absent), or set aug_source: generated")


def check_part_grids(rows, cfg: Config) -> None:
    """A model that learns from part grids, on an export without any, would train with an all-empty part
    target (a part loss of 0, silently): refuse in one line instead."""
    grids = rows.select_columns(["part_grid"]).with_format("arrow")["part_grid"]
    if grids.null_count == len(grids):
        raise T2IError(f"the {cfg.model} config learns from part grids, but no train image of this export has "
                       "one: run `t2iverw segment` before exporting, or train a model without part supervision "
                       "(--model irra, ivt or cpsl; pfcvr with --no-plfa)")


class TrainImages(Dataset):
    """Training samples, one per image-caption item.

    With `cfg.aug`, each item has four copies (original, dark, light, noisy). Grouped by
    batch (the released scheme), an item is the list of its four copies, sharing one
    caption and one MLM masking, and `collate` keeps them in one batch; grouped by epoch,
    every copy is its own sample with its own masking and the epoch is four times longer.
    """

    def __init__(self, split: TrainSplit, tokenizer, cfg: Config, grid: int, needs: frozenset[str] = frozenset(),
                 mean: tuple = tuple(OPENAI_CLIP_MEAN), std: tuple = tuple(OPENAI_CLIP_STD),
                 train_texts: Callable[[str, random.Random], list[str]] | None = None):
        """`grid`: patches per side of the model's input; `needs`: the optional fields the model
        asks for (RetrievalModel.batch_needs); `mean`/`std`: its pixel normalisation;
        `train_texts`: the texts an item's caption becomes (RetrievalModel.train_texts; None: the
        caption alone, tokenized once up front), each one sample of the item, kept in one batch
        like the augmented copies."""
        self.rows, self.items, self.tokenizer, self.cfg = split.fit, split.items, tokenizer, cfg
        self.train_texts = train_texts
        self.label = {v: i for i, v in enumerate(split.classes)}
        self.grid, self.needs = grid, needs
        self.variants = VARIANTS if cfg.aug else VARIANTS[:1]
        self.per_epoch = len(self.variants) if cfg.aug and cfg.aug_grouping == "epoch" else 1
        check_copies(self.rows, cfg)
        size = cfg.image_size
        steps: list = [v2.Resize((size, size), antialias=True), v2.RandomHorizontalFlip()]
        if cfg.geometric_aug:
            steps += [v2.Pad(cfg.pad), v2.RandomCrop(size)]
        self.geometric = v2.Compose(steps)
        self.normalize = v2.Normalize(list(mean), list(std))
        self.erase = _erasing(cfg, mean) if cfg.geometric_aug else v2.Identity()
        self.input_ids, self.attention = self._tokenize_items()

    def _tokenize_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's caption tokenized once, up front, in batched tokenizer calls (int32 ids, bool mask):
        an item's copies, and its samples in later epochs, share these rows."""
        texts = self.rows.select_columns(["captions", "caption"])
        ids = torch.zeros(len(self.items), self.cfg.text_length, dtype=torch.int32)
        attention = torch.zeros(len(self.items), self.cfg.text_length, dtype=torch.bool)
        for start in range(0, len(self.items), TOKENIZE_BATCH):
            chunk = self.items[start : start + TOKENIZE_BATCH]
            rows = texts[chunk[0][0] : chunk[-1][0] + 1]  # items are in row order: one contiguous slice
            first = chunk[0][0]
            captions = [caption_list(rows["captions"][r - first], rows["caption"][r - first])[k] for r, k in chunk]
            tokens = tokenize(self.tokenizer, captions, self.cfg.text_length)
            ids[start : start + len(chunk)] = tokens["input_ids"]
            attention[start : start + len(chunk)] = tokens["attention_mask"].bool()
        return ids, attention

    def __len__(self) -> int:
        return len(self.items) * self.per_epoch

    def labels(self) -> list[int]:
        """The identity label of every sample index (an item's copies share it), for the identity sampler."""
        vids = self.rows["vehicle_id"]
        return [self.label[vids[r]] for r, _ in self.items for _ in range(self.per_epoch)]

    def __getitem__(self, index: int) -> dict | list[dict]:
        item = index // self.per_epoch
        row_index, k = self.items[item]
        row = self.rows[row_index]
        if self.train_texts is None:
            return self._sample(row, self.input_ids[item].long(), self.attention[item].long(), item, index)
        samples = []
        for text in self.train_texts(caption_list(row["captions"], row["caption"])[k], random):
            tokens = tokenize(self.tokenizer, [text], self.cfg.text_length)
            sample = self._sample(row, tokens["input_ids"][0], tokens["attention_mask"][0], item, index)
            samples += sample if isinstance(sample, list) else [sample]
        return samples

    def _sample(self, row: dict, ids: torch.Tensor, attention: torch.Tensor, item: int, index: int) -> dict | list[dict]:
        """The sample of one text of an item, or its augmented copies."""
        text = {"input_ids": ids, "attention_mask": attention,
                "labels": torch.tensor(self.label[row["vehicle_id"]]), "item": torch.tensor(item)}
        masks = torch.cat([self._parts(row), self._seed(row)[None]])  # (parts + 1, 24, 24), shared by the copies
        if self.per_epoch > 1:  # one copy per sample
            variant = self.variants[index % self.per_epoch]
            return self._copy(row, self._pixels(row, variant, None), masks, self._masked(text))
        text = self._masked(text)  # one masking shared by the copies, as released
        original = decode_rgb(row["image"])  # decoded once; the generated copies are made from this array
        copies = [self._copy(row, self._pixels(row, variant, original), masks, text) for variant in self.variants]
        return copies if self.cfg.aug else copies[0]

    def _masked(self, text: dict) -> dict:
        if "mlm" not in self.needs:
            return text
        mlm_ids, mlm_labels = mask_tokens(text["input_ids"], text["attention_mask"], self.tokenizer, self.cfg.mlm_ratio)
        return {**text, "mlm_ids": mlm_ids, "mlm_labels": mlm_labels}

    def _copy(self, row: dict, pixels: torch.Tensor, masks: torch.Tensor, text: dict) -> dict:
        """One image of the item: its pixels, part grid and hidden MIM cells, transformed together."""
        h, w = pixels.shape[-2:]
        masks = tv_tensors.Mask(F.interpolate(masks[None].float(), size=(h, w), mode="nearest")[0].bool())
        pixels, masks = self.geometric(tv_tensors.Image(pixels), masks)
        cells = pool_grid(masks.as_subclass(torch.Tensor), self.grid)
        sample = {**text, "pixel_values": self.erase(self.normalize(pixels)).as_subclass(torch.Tensor)}
        if "part_grid" in self.needs:
            sample["part_grid"] = cells[:-1]
        if "mim" in self.needs:
            seed = cells[-1] if self.cfg.mim_mask == "release" else None
            sample["mim_hidden"] = mim_cells(seed, self.grid**2, self.cfg.mim_ratio).view(self.grid, self.grid)
        return sample

    def _pixels(self, row: dict, variant: str, original: torch.Tensor | None) -> torch.Tensor:
        """[0, 1] float pixels of one copy: the export's own copy (`aug_source: release`) or one generated
        from `original` (the decoded original, decoded here when not given)."""
        if variant != "original" and self.cfg.aug_source == "release":
            return decode_rgb(row[f"image_{variant}"])
        return photometric(decode_rgb(row["image"]) if original is None else original, variant, self.cfg)

    @staticmethod
    def _parts(row: dict) -> torch.Tensor:
        if row["part_grid"] is None:
            return torch.zeros(len(PARTS), *GRID, dtype=torch.bool)
        return torch.tensor(row["part_grid"], dtype=torch.bool)

    def _seed(self, row: dict) -> torch.Tensor:
        """The MIM seed: the release's `mask` grid, else the union of the part grids (how the release derives it)."""
        if row["mim_seed"] is not None:
            return torch.tensor(row["mim_seed"], dtype=torch.bool)
        return self._parts(row).any(dim=0)


def decode_rgb(image) -> torch.Tensor:
    """A PIL image as (3, H, W) float32 pixels in [0, 1]."""
    return v2.functional.to_dtype(v2.functional.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)


def loader_options(num_workers: int, device: str | torch.device) -> dict:
    """DataLoader keywords: workers kept alive across epochs, and pinned batches (asynchronous host-to-GPU
    copies) where the device is CUDA."""
    return {"num_workers": num_workers, "persistent_workers": num_workers > 0,
            "pin_memory": torch.device(device).type == "cuda"}


def collate(samples: list[dict | list[dict]]) -> dict[str, torch.Tensor]:
    """A batch; an item given as its list of copies contributes all of them, next to each other."""
    flat = [copy for s in samples for copy in (s if isinstance(s, list) else [s])]
    return default_collate(flat)


@dataclass
class Queries:
    """Every caption of the captioned rows, sorted by query id (the evaluator's order)."""

    ids: list[str]
    texts: list[str]
    labels: list[str]


def queries(rows) -> Queries:
    found = []
    for cid, cs, c, v in zip(rows["caption_id"], rows["captions"], rows["caption"], rows["vehicle_id"]):
        found += [(query_id(cid, k), text, v) for k, text in enumerate(caption_list(cs, c))]
    found.sort(key=lambda q: q[0])
    return Queries([q[0] for q in found], [q[1] for q in found], [q[2] for q in found])


class EvalImages(Dataset):
    """Resized, normalised images in the given row order, for encoding a gallery."""

    def __init__(self, rows, image_size: int, order: list[int] | None = None, mean: tuple = tuple(OPENAI_CLIP_MEAN),
                 std: tuple = tuple(OPENAI_CLIP_STD)):
        self.rows = rows
        self.order = list(range(len(rows))) if order is None else order
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((image_size, image_size), antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(mean), list(std)),
            ]
        )

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.rows[self.order[index]]["image"].convert("RGB")).as_subclass(torch.Tensor)


def _erasing(cfg: Config, mean: tuple[float, ...]):
    """Random erasing after normalisation: `mean` fills with the mean's values (PFCVR's and IRRA's
    torchvision transform); `pixel` is timm's per-pixel normal noise, the class IVT uses
    (datasets/make_dataloader.py:148)."""
    if cfg.erase_mode == "pixel":
        from timm.data.random_erasing import RandomErasing

        return RandomErasing(probability=cfg.erase_prob, min_area=cfg.erase_scale[0], max_area=cfg.erase_scale[1],
                             mode="pixel", max_count=1, device="cpu")
    return v2.RandomErasing(p=cfg.erase_prob, scale=tuple(cfg.erase_scale), value=list(mean))
