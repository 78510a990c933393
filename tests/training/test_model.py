"""The PFCVR model on a tiny random CLIP loaded with from_pretrained: losses, gradients, switches."""

from __future__ import annotations

import pytest
import torch
import yaml

from t2iverw.models import losses
from t2iverw.models.base import NEEDS
from t2iverw.training.config import (CONFIGS, PFCVR_AUG_CONFIG, PFCVR_CONFIG, PFCVR_PAPER_CONFIG, TINY_CONFIG,
                                     config_from_options, load_config)
from t2iverw.training.data import TrainImages, collate, load_split, split_train
from t2iverw.models.backbones import load_clip
from t2iverw.models.pfcvr import build_model

ALL_NEEDS = frozenset(NEEDS)  # every optional field the loader makes

# the sizes of the tiny config, to build any config's modules on the tiny backbone
TINY_SIZES = ("image_size", "heads", "part_decoder_layers", "part_ffn", "mlm_layers", "mim_layers", "mim_head_dim",
              "text_length", "temperature")
PAPER = {k: v for k, v in yaml.safe_load(PFCVR_PAPER_CONFIG.read_text()).items()
         if k in ("plfa_memory", "part_pool", "part_loss", "mim_mask", "mim_ratio")}
# DETR's first decoder layer runs self-attention on its all-zero target: the values are equal, so its
# query/key projections get no gradient (nor, while its biases are zero, its output projection and
# first norm). True of the released decoder as well.
DETR_FIRST_LAYER = {"part_decoder.layers.0.self_attn.in_proj_weight", "part_decoder.layers.0.self_attn.out_proj.weight",
                    "part_decoder.layers.0.norm1.weight"}


def tiny_cfg(tiny_clip_dir, base=TINY_CONFIG, **overrides):
    """`base`'s behaviour at the tiny config's sizes, on the tiny backbone."""
    tiny = load_config(TINY_CONFIG)
    sizes = {k: getattr(tiny, k) for k in TINY_SIZES}
    return load_config(base, {**sizes, "clip": str(tiny_clip_dir), "random_clip": None, "aug_source": "generated",
                              **overrides})


@pytest.fixture(scope="session")
def train_split(export_dir):
    return split_train(load_split(str(export_dir), "train"), 0, 0)


@pytest.fixture(scope="session")
def batch(train_split, tiny_clip_dir):
    cfg = tiny_cfg(tiny_clip_dir)
    _, tokenizer = load_clip(tiny_clip_dir, cfg.image_size)
    data = TrainImages(train_split, tokenizer, cfg, 8, ALL_NEEDS)
    torch.manual_seed(0)
    return collate([data[i] for i in range(6)])


def model_for(cfg, tiny_clip_dir, classes: int = 50):
    clip, tokenizer = load_clip(tiny_clip_dir, cfg.image_size)
    torch.manual_seed(0)
    return build_model(clip, tokenizer, cfg, classes)


def test_position_embeddings_are_interpolated_to_the_input_size(tiny_clip_dir):
    clip, tokenizer = load_clip(tiny_clip_dir, 64)
    emb = clip.vision_model.embeddings
    assert emb.position_embedding.num_embeddings == (64 // 8) ** 2 + 1 == emb.num_positions
    assert clip.config.vision_config.image_size == 64
    assert clip.vision_model(pixel_values=torch.zeros(1, 3, 64, 64)).last_hidden_state.shape == (1, 65, 64)
    assert tokenizer.mask_token_id == clip.config.text_config.vocab_size - 1  # MLM's mask token was added


VARIANTS = {
    "release": {},
    "paper": PAPER,
    "release, no plfa": {"plfa": False},
    "release, no bmria": {"bmria": False},
    "paper, no plfa, no bmria": {**PAPER, "plfa": False, "bmria": False},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_reach_exactly_the_switched_on_modules(batch, tiny_clip_dir, variant):
    cfg = tiny_cfg(tiny_clip_dir, **VARIANTS[variant])
    model = model_for(cfg, tiny_clip_dir)
    ids_before = batch["input_ids"].clone()
    terms = model(batch)
    expected = {"sdm", "id"} | ({"part"} if cfg.plfa else set()) | ({"mlm", "mim"} if cfg.bmria else set())
    assert set(terms) == expected
    assert all(t.shape == () and torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    assert torch.equal(batch["input_ids"], ids_before)  # nothing masks the SDM/ID tokens in place
    modules = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert modules == ({"clip", "classifier"} | ({"part_queries", "part_decoder"} if cfg.plfa else set())
                       | ({"part_pool"} if cfg.plfa and cfg.part_pool == "learned" else set())
                       | ({"mlm", "mim"} if cfg.bmria else set()))
    no_grad = {n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())}
    assert no_grad == (DETR_FIRST_LAYER if cfg.plfa else set())


def test_release_part_queries_never_read_the_caption_and_the_papers_do(batch, tiny_clip_dir):
    other = dict(batch, input_ids=batch["input_ids"].flip(0), attention_mask=batch["attention_mask"].flip(0))
    for memory, reads_caption in (("image", False), ("caption", True)):
        model = model_for(tiny_cfg(tiny_clip_dir, plfa_memory=memory), tiny_clip_dir).eval()
        with torch.no_grad():
            img = model.image_tokens(batch["pixel_values"])
            _, textual, _ = model.parts(img, model.text_tokens(batch["input_ids"]), batch)
            _, textual2, _ = model.parts(img, model.text_tokens(other["input_ids"]), other)
        assert (not torch.allclose(textual, textual2)) == reads_caption, memory


def test_mlm_reaches_the_caption_only_through_where_it_looks(batch, tiny_clip_dir):
    """No residual around the cross-attention: with every image token equal, each caption position gets
    the same attended vector and, through full attention without positions, the same logits; a
    different image changes them."""
    model = model_for(tiny_cfg(tiny_clip_dir), tiny_clip_dir).eval()
    with torch.no_grad():
        text = model.text_tokens(batch["mlm_ids"])
        img = model.image_tokens(batch["pixel_values"])
        flat = model.mlm.head(model.mlm(text, img[:, :1].expand_as(img)))
        assert torch.allclose(flat, flat[:, :1].expand_as(flat), atol=1e-5)
        masked = batch["mlm_labels"] != -100
        logits = model.mlm.head(model.mlm(text, img)[masked])
        assert not torch.allclose(logits, model.mlm.head(model.mlm(text, img.flip(0))[masked]))


def test_mim_encoder_drops_the_hidden_patches(batch, tiny_clip_dir):
    model = model_for(tiny_cfg(tiny_clip_dir), tiny_clip_dir).eval()
    hidden = batch["mim_hidden"].flatten(1)
    assert (hidden.sum(1) == 48).all()  # 75% of the 8 x 8 grid
    kept = (~hidden).nonzero()[:, 1].view(hidden.shape[0], -1)
    cells = hidden.view(-1, 1, 8, 1, 8, 1).expand(-1, 3, -1, 8, -1, 8).reshape(-1, 3, 64, 64)
    noise = torch.randn_like(batch["pixel_values"]) * cells  # changes hidden patches only
    with torch.no_grad():
        seen = model.image_tokens(batch["pixel_values"], kept)
        assert seen.shape == (6, 1 + 16, 64)
        assert torch.allclose(seen, model.image_tokens(batch["pixel_values"] + noise, kept), atol=1e-5)


def test_a_missing_part_contributes_nothing(batch, tiny_clip_dir):
    for part_loss in ("within_image", "batch"):
        model = model_for(tiny_cfg(tiny_clip_dir, part_loss=part_loss, bmria=False), tiny_clip_dir).eval()
        b = dict(batch, part_grid=batch["part_grid"].clone())
        b["part_grid"][0] = False  # image 0 shows no part at all
        img = model.image_tokens(b["pixel_values"])
        img.retain_grad()
        visual, textual, present = model.parts(img, model.text_tokens(b["input_ids"]), b)
        assert not present[0].any() and torch.isfinite(visual).all() and torch.isfinite(textual).all()
        model(b)  # finite end to end
        loss = losses.part_within_image if part_loss == "within_image" else losses.part_batch
        loss(visual, textual, present, model.scale).backward()
        assert not img.grad[0, 1:].any(), part_loss  # image 0's patch tokens get no gradient from the part loss
        assert img.grad[1:].any()


@pytest.mark.parametrize("base", [PFCVR_CONFIG, PFCVR_AUG_CONFIG, PFCVR_PAPER_CONFIG], ids=lambda p: p.stem)
@pytest.mark.parametrize("flag", ["plfa", "bmria", "aug"])
def test_ablation_flags_work_on_every_config(train_split, tiny_clip_dir, base, flag):
    parsed = config_from_options(base, None, [], [flag])  # what `t2iverw train --config BASE --no-FLAG` runs
    assert getattr(parsed, flag) is False
    assert {k: v for k, v in parsed.to_dict().items() if k != flag} == \
        {k: v for k, v in load_config(base).to_dict().items() if k != flag}
    cfg = tiny_cfg(tiny_clip_dir, base, **{flag: False})
    _, tokenizer = load_clip(tiny_clip_dir, cfg.image_size)
    data = TrainImages(train_split, tokenizer, cfg, 8, ALL_NEEDS)
    torch.manual_seed(0)
    terms = model_for(cfg, tiny_clip_dir)(collate([data[0], data[1]]))
    assert ("part" in terms) == cfg.plfa and ("mim" in terms) == cfg.bmria
    assert all(torch.isfinite(t) for t in terms.values())


def test_irra_builds_only_its_modules_and_every_one_learns(batch, tiny_clip_dir):
    """IRRA is PFCVR's global branch + MLM: no part decoder, no MIM decoder, and each loss reaches its module."""
    from t2iverw.models.irra import IRRA

    cfg = load_config(CONFIGS / "irra-tiny.yaml", {"clip": str(tiny_clip_dir), "random_clip": None})
    clip, tokenizer = load_clip(tiny_clip_dir, cfg.image_size)
    torch.manual_seed(0)
    model = IRRA(clip, cfg, 50)
    assert IRRA.batch_needs(cfg) == {"mlm"}
    terms = model({k: v for k, v in batch.items() if k not in ("part_grid", "mim_hidden")})
    assert set(terms) == {"sdm", "id", "mlm"} and all(torch.isfinite(t) for t in terms.values())
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"clip", "classifier", "mlm"}
    for name, module in (("sdm", model.clip.visual_projection), ("id", model.classifier), ("mlm", model.mlm.head)):
        model.zero_grad()
        terms = model({k: v for k, v in batch.items() if k not in ("part_grid", "mim_hidden")})
        terms[name].backward()
        assert any(p.grad is not None and p.grad.any() for p in module.parameters()), name
    model.zero_grad()
    model(batch)["sdm"].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.mlm.parameters())  # SDM never reaches MLM
