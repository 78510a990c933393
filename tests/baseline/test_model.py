"""The PFCVR model on a tiny random CLIP loaded with from_pretrained: losses, gradients, switches."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from torch.utils.data import default_collate

from t2iverw.baseline.config import load_config
from t2iverw.baseline.data import TrainImages, load_export, split_train
from t2iverw.baseline.model import build_model, load_clip

from t2iverw.baseline.config import TINY_CONFIG

SWITCHES = [(False, False), (True, False), (False, True), (True, True)]


@pytest.fixture(scope="session")
def tiny_clip_dir(clip_tokenizer_dir, tmp_path_factory):
    """A random CLIPModel of the tiny config (at 32 px, so loading at 64 px must interpolate) plus the tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    kwargs = yaml.safe_load(TINY_CONFIG.read_text())["random_clip"]
    kwargs["vision_config"] = {**kwargs["vision_config"], "image_size": 32}
    out = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(**kwargs)).save_pretrained(out)
    for f in clip_tokenizer_dir.iterdir():
        shutil.copy(f, out)
    return out


@pytest.fixture(scope="session")
def batch_and_parts(export_dir, tiny_clip_dir):
    cfg = load_config(TINY_CONFIG, {"clip": str(tiny_clip_dir), "random_clip": None})
    clip, tokenizer = load_clip(tiny_clip_dir, cfg.image_size)
    split = split_train(load_export(str(export_dir))["train"], cfg.val_ratio, cfg.seed)
    data = TrainImages(split.fit, split.classes, tokenizer, cfg, clip.config.vision_config.patch_size)
    torch.manual_seed(0)
    batch = default_collate([data[i] for i in range(8)])  # two rows, each in all four augmented copies
    return cfg, tokenizer, split.classes, batch


def _model(cfg, tiny_clip_dir, classes, plfa: bool, bmria: bool):
    cfg = load_config(TINY_CONFIG, {"clip": str(tiny_clip_dir), "random_clip": None, "plfa": plfa, "bmria": bmria})
    clip, tokenizer = load_clip(tiny_clip_dir, cfg.image_size)
    torch.manual_seed(0)
    return build_model(clip, tokenizer, cfg, len(classes))


def test_position_embeddings_are_interpolated_to_the_input_size(tiny_clip_dir):
    clip, tokenizer = load_clip(tiny_clip_dir, 64)
    emb = clip.vision_model.embeddings
    assert emb.position_embedding.num_embeddings == (64 // 8) ** 2 + 1 == emb.num_positions
    assert clip.config.vision_config.image_size == 64
    assert clip.vision_model(pixel_values=torch.zeros(1, 3, 64, 64)).last_hidden_state.shape == (1, 65, 64)
    assert tokenizer.mask_token_id == clip.config.text_config.vocab_size - 1  # MLM's mask token was added


@pytest.mark.parametrize("plfa,bmria", SWITCHES)
def test_losses_are_finite_and_gradients_reach_exactly_the_switched_on_modules(batch_and_parts, tiny_clip_dir, plfa, bmria):
    cfg, _, classes, batch = batch_and_parts
    model = _model(cfg, tiny_clip_dir, classes, plfa, bmria)
    ids_before = batch["input_ids"].clone()
    terms = model(batch)
    expected = {"sdm", "id"} | ({"part_itc"} if plfa else set()) | ({"mlm", "mim"} if bmria else set())
    assert set(terms) == expected
    assert all(t.shape == () and torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    assert torch.equal(batch["input_ids"], ids_before)  # nothing masks the SDM/ID tokens in place
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("part_") for n in names) == plfa
    assert any(n.startswith(("mlm_", "mim_")) for n in names) == bmria
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert no_grad == []


def test_batch_keeps_caption_tokens_unmasked_and_pools_part_grids(batch_and_parts):
    cfg, tokenizer, _, batch = batch_and_parts
    predicted = batch["mlm_labels"] != -100
    assert predicted.any(dim=1).all()
    assert torch.equal(batch["input_ids"][predicted], batch["mlm_labels"][predicted])
    assert not torch.equal(batch["input_ids"], batch["mlm_ids"])
    assert batch["part_grid"].shape == (8, 6, 8, 8) and batch["part_grid"].dtype == torch.bool
    assert batch["part_grid"].any()


def test_a_missing_part_contributes_nothing(batch_and_parts, tiny_clip_dir):
    cfg, _, classes, batch = batch_and_parts
    model = _model(cfg, tiny_clip_dir, classes, plfa=True, bmria=False)
    batch = dict(batch, part_grid=batch["part_grid"].clone())
    batch["part_grid"][0] = False  # image 0 shows no part at all
    img = model.image_tokens(batch["pixel_values"])
    txt = model.text_tokens(batch["input_ids"], batch["attention_mask"])
    img.retain_grad()
    visual, textual, present = model.parts(img, txt, batch)
    assert not present[0].any() and torch.isfinite(visual).all()
    from t2iverw.baseline.losses import part_itc

    part_itc(visual, textual, present, model.scale).backward()
    assert not img.grad[0].any()  # image 0's tokens get no gradient from the part loss
    assert img.grad[1:].any()
