"""Training samples: caption items, augmentation copies and their grouping, masks that follow the image."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from t2iverw.models.base import NEEDS
from t2iverw.training.config import TINY_CONFIG, load_config
from t2iverw.training.data import (COPY_COLUMNS, TrainImages, collate, load_split, photometric, queries,
                                   split_train)
from t2iverw.training.engine import train_loader
from t2iverw.constants import PARTS
from t2iverw.errors import T2IError

ALL_NEEDS = frozenset(NEEDS)  # every optional field the loader makes

MEAN, STD = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None], torch.tensor(OPENAI_CLIP_STD)[:, None, None]


@pytest.fixture(scope="module")
def tokenizer(clip_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(clip_tokenizer_dir)
    tok.add_special_tokens({"mask_token": "<|mask|>"})
    return tok


def png(array: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def one_row_split(captions: list[str], mim_seed=None, extra: dict | None = None):
    """A one-image train split: left half white, right half black, its 'windows' on the left half."""
    import datasets

    image = np.zeros((48, 48, 3), dtype=np.uint8)
    image[:, :24] = 255
    parts = np.zeros((len(PARTS), 24, 24), dtype=bool)
    parts[0, :, :12] = True
    row = {"image": [png(image)], "image_id": ["a"], "vehicle_id": ["1"], "caption_id": ["a"], "caption": [captions[0]],
           "captions": [captions], "part_grid": [parts.tolist()], "mim_seed": [mim_seed]}
    features = {"image": datasets.Image(), "part_grid": datasets.List(datasets.List(datasets.List(datasets.Value("bool")))),
                "mim_seed": datasets.List(datasets.List(datasets.Value("bool"))),
                "captions": datasets.List(datasets.Value("string"))}
    for name, value in (extra or {}).items():
        row[name], features[name] = [value], datasets.Image()
    for name in row:
        features.setdefault(name, datasets.Value("string"))
    return split_train(datasets.Dataset.from_dict(row, features=datasets.Features(features)), 0, 0)


def cfg(**overrides):
    return load_config(TINY_CONFIG, {"aug_source": "generated", **overrides})


def test_every_caption_is_an_item_and_a_query(tokenizer):
    split = one_row_split(["a red car", "a crimson sedan"])
    assert split.items == [(0, 0), (0, 1)]
    data = TrainImages(split, tokenizer, cfg(), 8, ALL_NEEDS)
    first, second = data[0], data[1]
    assert not torch.equal(first["input_ids"], second["input_ids"])
    q = queries(split.fit)
    assert q.ids == ["a", "a#1"] and q.texts == ["a red car", "a crimson sedan"] and q.labels == ["1", "1"]


def test_an_empty_caption_is_no_training_item_but_keeps_the_query_ids_after_it(tokenizer):
    split = one_row_split(["a red car", "", "a crimson sedan"])
    assert split.items == [(0, 0), (0, 2)]
    third = TrainImages(one_row_split(["a crimson sedan"]), tokenizer, cfg(), 8, ALL_NEEDS)[0]["input_ids"]
    assert torch.equal(TrainImages(split, tokenizer, cfg(), 8, ALL_NEEDS)[1]["input_ids"], third)
    q = queries(split.fit)  # the ids evaluation derives from the same row: caption k is `a#k`
    assert q.ids == ["a", "a#1", "a#2"] and q.texts == ["a red car", "", "a crimson sedan"]


def test_part_grid_and_mim_seed_flip_with_their_image(tokenizer):
    """The released code flips the image but not its masks; here they always agree."""
    seed = np.zeros((24, 24), dtype=bool)
    seed[:6, :6] = True  # the top-left corner of the 24 grid: 2 x 2 cells of the 8 grid
    data = TrainImages(one_row_split(["a car"], seed.tolist()), tokenizer, cfg(), 8, ALL_NEEDS)
    flips = set()
    for _ in range(30):
        s = data[0]
        bright_left = bool(s["pixel_values"][0, :, :32].mean() > s["pixel_values"][0, :, 32:].mean())
        flips.add(bright_left)
        left, right = s["part_grid"][0, :, :4], s["part_grid"][0, :, 4:]
        assert (left.all() and not right.any()) if bright_left else (right.all() and not left.any())
        corner = s["mim_hidden"][:2, :2] if bright_left else s["mim_hidden"][:2, 6:]
        assert corner.all() and int(s["mim_hidden"].sum()) == 48  # the seed is hidden first, 75% in all
    assert flips == {True, False}


def test_without_a_release_seed_mim_starts_from_the_union_of_the_parts(tokenizer):
    data = TrainImages(one_row_split(["a car"]), tokenizer, cfg(), 8, ALL_NEEDS)
    for _ in range(5):
        s = data[0]
        assert s["mim_hidden"][s["part_grid"].any(0)].all() and int(s["mim_hidden"].sum()) == 48


def test_generated_copies_are_the_documented_gamma_and_noise():
    c = cfg()
    grey = torch.full((3, 32, 32), 0.25)
    assert torch.allclose(photometric(grey, "dark", c), torch.full_like(grey, 0.25**2.0))
    assert torch.allclose(photometric(grey, "light", c), torch.full_like(grey, 0.5))
    noisy = photometric(grey, "noisy", c) - grey
    assert abs(noisy.mean()) < 0.005 and abs(noisy.std() - 0.05) < 0.005
    assert torch.equal(photometric(grey, "original", c), grey)


def test_grouped_augmentation_puts_the_four_copies_of_an_item_in_one_batch(export_dir, tokenizer):
    split = split_train(load_split(str(export_dir), "train"), 0, 0)
    c = cfg(aug=True, aug_grouping="batch", batch_size=5)
    data = TrainImages(split, tokenizer, c, 8, ALL_NEEDS)
    assert len(data) == len(split.items)  # the epoch is not longer
    torch.manual_seed(0)
    batch = next(iter(train_loader(data, c)))
    assert batch["pixel_values"].shape[0] == 20
    items = batch["item"].view(5, 4)
    assert (items == items[:, :1]).all() and len(set(items[:, 0].tolist())) == 5  # 4 copies each, side by side
    for key in ("input_ids", "mlm_ids", "mlm_labels", "labels"):  # one caption, one MLM masking per item
        group = batch[key].view(5, 4, -1)
        assert (group == group[:, :1]).all(), key
    brightness = batch["pixel_values"].view(5, 4, -1).mean(-1)  # original, dark, light, noisy
    assert (brightness[:, 1] < brightness[:, 0]).all() and (brightness[:, 2] > brightness[:, 0]).all()


def test_epoch_grouping_makes_each_copy_its_own_sample(export_dir, tokenizer):
    split = split_train(load_split(str(export_dir), "train"), 0, 0)
    data = TrainImages(split, tokenizer, cfg(aug=True, aug_grouping="epoch"), 8, ALL_NEEDS)
    assert len(data) == 4 * len(split.items)
    samples = [data[i] for i in range(4)]
    assert all(isinstance(s, dict) for s in samples) and {int(s["item"]) for s in samples} == {0}
    assert collate(samples)["pixel_values"].shape[0] == 4


def test_release_copies_come_from_the_export_columns(tokenizer):
    black, white = np.zeros((48, 48, 3), np.uint8), np.full((48, 48, 3), 255, np.uint8)
    split = one_row_split(["a car"], extra={"image_dark": png(black), "image_light": png(white), "image_noisy": png(black)})
    data = TrainImages(split, tokenizer, cfg(aug=True, aug_source="release"), 8, ALL_NEEDS)
    original, dark, light, noisy = (s["pixel_values"] for s in data[0])
    assert torch.allclose(dark, (0 - MEAN) / STD * torch.ones_like(dark), atol=1e-5)
    assert torch.allclose(light, (1 - MEAN) / STD * torch.ones_like(light), atol=1e-5)
    assert not torch.allclose(original, dark)


def test_release_copies_missing_is_one_clear_error(export_dir, tokenizer):
    split = split_train(load_split(str(export_dir), "train", optional=COPY_COLUMNS), 0, 0)
    with pytest.raises(T2IError, match="aug_source: release needs .*--augmented-copies.*aug_source: generated"):
        TrainImages(split, tokenizer, cfg(aug=True, aug_source="release"), 8, ALL_NEEDS)


def test_a_local_export_is_read_without_the_huggingface_cache(export_dir, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    rows = load_split(str(export_dir), "test")
    assert len(rows) == pq.read_metadata(next((export_dir / "data").glob("test-*.parquet"))).num_rows
    assert isinstance(rows[0]["image"], Image.Image)
    assert not (tmp_path / "hf").exists()
    cached = load_split(str(export_dir), "test", cache_dir=str(tmp_path / "chosen"))
    assert cached["image_id"] == rows["image_id"] and any((tmp_path / "chosen").iterdir())


def test_erasing_fills_with_the_mean_or_with_timms_pixel_noise():
    """`erase_mode: mean` (PFCVR, IRRA) fills the erased box with one value per channel; `pixel` (IVT's
    timm RandomErasing, make_dataloader.py:148) with per-pixel normal noise."""
    import dataclasses

    from t2iverw.training.config import Config
    from t2iverw.training.data import _erasing

    cfg = Config(erase_prob=1.0, erase_scale=[0.3, 0.3])
    pixels = torch.full((3, 40, 40), 7.0)
    torch.manual_seed(0)
    filled = _erasing(cfg, (0.5, 0.25, 0.125))(pixels.clone())
    erased = filled != 7.0
    assert 0 < erased[0].float().mean() <= 0.31
    assert {round(v, 6) for v in filled[0][erased[0]].tolist()} == {0.5}
    noisy = _erasing(dataclasses.replace(cfg, erase_mode="pixel"), (0.5, 0.25, 0.125))(pixels.clone())
    values = noisy[noisy != 7.0]
    assert 0.2 * 1600 * 3 < values.numel() <= 0.31 * 1600 * 3  # the box on all three channels
    assert abs(values.mean().item()) < 0.2 and 0.8 < values.std().item() < 1.2  # standard normal noise
