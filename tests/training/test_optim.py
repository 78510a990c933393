"""Adam's groups and the schedule of pfcvr.yaml, against the released rule written out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from t2iverw.training.config import PFCVR_CONFIG, PFCVR_PAPER_CONFIG, load_config
from t2iverw.training.engine import make_optimizer
from t2iverw.models.backbones import load_clip
from t2iverw.models.pfcvr import build_model
from t2iverw.training.optim import lr_factor, param_groups

BASE, DECAY = 1e-5, 4e-5

# pfcvr.yaml, parameter name -> (lr, weight decay), from solver/build.py:11-26 by hand:
# `cross` x5, then bias x2 without decay, then classifier / mlm_head x5; all else x1.
RELEASE_TABLE = {
    "clip.vision_model.encoder.layers.0.self_attn.q_proj.weight": (BASE, DECAY),
    "clip.vision_model.encoder.layers.0.self_attn.q_proj.bias": (2 * BASE, 0.0),
    "clip.text_model.embeddings.token_embedding.weight": (BASE, DECAY),
    "clip.visual_projection.weight": (BASE, DECAY),
    "clip.text_model.final_layer_norm.weight": (BASE, DECAY),
    "clip.text_model.final_layer_norm.bias": (2 * BASE, 0.0),
    "classifier.weight": (5 * BASE, DECAY),
    "classifier.bias": (5 * BASE, 0.0),  # x5 wins over the bias x2; the bias keeps no decay
    "part_queries.weight": (BASE, DECAY),
    "part_decoder.layers.0.multihead_attn.in_proj_weight": (BASE, DECAY),
    "part_decoder.layers.0.linear1.bias": (2 * BASE, 0.0),
    "part_decoder.norm.weight": (BASE, DECAY),
    "part_pool.weight": (BASE, DECAY),
    "part_pool.bias": (2 * BASE, 0.0),
    "mlm.cross_attn.in_proj_weight": (5 * BASE, DECAY),  # release: cross_attn
    "mlm.cross_attn.in_proj_bias": (2 * BASE, 0.0),  # the bias rule comes after `cross`
    "mlm.cross_attn.out_proj.weight": (5 * BASE, DECAY),
    "mlm.cross_transformer.0.attn.in_proj_weight": (5 * BASE, DECAY),  # release: cross_modal_transformer
    "mlm.cross_transformer.0.mlp.c_fc.bias": (2 * BASE, 0.0),
    "mlm.cross_transformer.0.ln_1.weight": (5 * BASE, DECAY),
    "mlm.ln_pre_t.weight": (BASE, DECAY),  # release: ln_pre_t, no `cross` in the name
    "mlm.ln_pre_i.bias": (2 * BASE, 0.0),
    "mlm.ln_post.weight": (BASE, DECAY),
    "mlm.head.dense.weight": (5 * BASE, DECAY),  # release: mlm_head
    "mlm.head.fc.bias": (5 * BASE, 0.0),
    "mim.token": (BASE, DECAY),  # release: mask_token
    "mim.pos": (BASE, DECAY),  # release: visual_decoder_pos_embed
    "mim.blocks.0.attn2.to_k.weight": (BASE, DECAY),  # release: visual_decoder..., no `cross`
    "mim.blocks.0.attn1.to_out.bias": (2 * BASE, 0.0),
    "mim.head.weight": (BASE, DECAY),  # release: decoder_pred
}


@pytest.fixture(scope="module")
def groups(tiny_clip_dir):
    cfg = load_config(PFCVR_CONFIG, {"clip": str(tiny_clip_dir), "image_size": 64, "heads": 4, "part_decoder_layers": 1,
                                     "part_ffn": 32, "mlm_layers": 1, "mim_layers": 1, "mim_head_dim": 8})
    clip, tokenizer = load_clip(tiny_clip_dir, cfg.image_size)
    model = build_model(clip, tokenizer, cfg, 10)
    return model, param_groups(model, cfg)


def test_release_groups_match_the_table(groups):
    model, found = groups
    got = {n: (round(g["lr"] / BASE, 6), g["weight_decay"]) for g in found for n in g["names"]}
    assert {n: got[n] for n in RELEASE_TABLE} == {n: (round(lr / BASE, 6), wd) for n, (lr, wd) in RELEASE_TABLE.items()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(got) == sorted(trainable) and "clip.logit_scale" not in got  # the fixed scale is not trained


def test_release_groups_put_x5_only_on_the_cross_modal_mlm_blocks_the_classifier_and_the_mlm_head(groups):
    _, found = groups
    fast = {".".join(n.split(".")[:2]) for g in found if g["lr"] == 5 * BASE for n in g["names"]}
    assert fast == {"classifier.weight", "classifier.bias", "mlm.cross_attn", "mlm.cross_transformer", "mlm.head"}


def test_the_papers_groups_put_every_new_module_at_x5(tiny_clip_dir):
    cfg = load_config(PFCVR_PAPER_CONFIG, {"clip": str(tiny_clip_dir), "image_size": 64, "heads": 4, "part_ffn": 32,
                                           "part_decoder_layers": 1, "mlm_layers": 1, "mim_layers": 1, "mim_head_dim": 8})
    clip, tokenizer = load_clip(tiny_clip_dir, cfg.image_size)
    for g in param_groups(build_model(clip, tokenizer, cfg, 10), cfg):
        for name in g["names"]:
            backbone, bias = name.startswith("clip."), "bias" in name.rsplit(".", 1)[-1]
            assert g["lr"] == pytest.approx(BASE * ((2 if bias else 1) if backbone else 5)), name
            assert g["weight_decay"] == (0.0 if bias else DECAY), name


def test_adam_gets_the_released_numerics(groups):
    model, found = groups
    adam = make_optimizer(model, load_config(PFCVR_CONFIG))
    assert isinstance(adam, torch.optim.Adam) and not isinstance(adam, torch.optim.AdamW)
    assert adam.defaults["eps"] == 1e-3 and adam.defaults["betas"] == (0.9, 0.999)
    assert [(g["lr"], g["weight_decay"]) for g in adam.param_groups] == [(g["lr"], g["weight_decay"]) for g in found]


def test_the_rate_changes_once_per_epoch_as_released():
    """solver/lr_scheduler.py stepped per epoch: epoch e (0-based) runs at 0.1 + 0.9 e / 5 during
    warm-up, then 0.5 (1 + cos(pi (e - 5) / 55))."""
    cfg, steps = load_config(PFCVR_CONFIG), 7
    expected = [0.1 + 0.9 * e / 5 for e in range(5)] + [0.5 * (1 + math.cos(math.pi * (e - 5) / 55)) for e in range(5, 60)]
    for e in range(60):
        assert [lr_factor(e * steps + i, steps, cfg) for i in range(steps)] == pytest.approx([expected[e]] * steps), e
    assert lr_factor(0, steps, cfg) == pytest.approx(0.1) and lr_factor(59 * steps, steps, cfg) < 0.001


def test_sgd_takes_momentum_and_the_same_groups(groups):
    """`optimizer: sgd` (IVT's solver): torch's SGD with `momentum`, over the groups Adam would get."""
    model, found = groups
    cfg = load_config(PFCVR_CONFIG)
    cfg.optimizer, cfg.momentum = "sgd", 0.9
    sgd = make_optimizer(model, cfg)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9 and not sgd.defaults["nesterov"]
    assert [(g["lr"], g["weight_decay"]) for g in sgd.param_groups] == [(g["lr"], g["weight_decay"]) for g in found]


def test_timm_cosine_is_timms_scheduler_stepped_as_ivt_steps_it():
    """IVT's schedule (scheduler_factory.py:7-38, stepped with step(epoch) for epoch 1..120 before
    each epoch, processor.py:105-109) against timm's CosineLRScheduler itself, and by hand at the
    points ivt-refs gives: the first trained epoch at 0.208x, t = 5 at about 0.996x, the last at the floor."""
    from timm.scheduler import CosineLRScheduler

    from t2iverw.training.config import load_config
    from t2iverw.training.optim import lr_factor

    cfg = load_config(Path(__file__).parents[2] / "benchmark" / "configs" / "ivt.yaml")
    base = cfg.lr
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    timm = CosineLRScheduler(opt, t_initial=cfg.epochs, lr_min=0.002 * base, warmup_t=cfg.warmup_epochs,
                             warmup_lr_init=0.01 * base, cycle_limit=1, t_in_epochs=True)
    steps = 7
    for epoch in range(cfg.epochs):  # our epoch e is their `for epoch in range(1, epochs + 1)` after step(epoch)
        timm.step(epoch + 1)
        ours = [lr_factor(epoch * steps + k, steps, cfg) * base for k in range(steps)]
        assert ours == pytest.approx([opt.param_groups[0]["lr"]] * steps, rel=1e-9), epoch
    first = lr_factor(0, steps, cfg)
    assert first == pytest.approx(0.01 + 0.99 / 5)  # 0.208
    assert lr_factor(4 * steps, steps, cfg) == pytest.approx(0.002 + 0.5 * 0.998 * (1 + math.cos(math.pi * 5 / 120)))
    assert lr_factor((cfg.epochs - 1) * steps, steps, cfg) == pytest.approx(0.002)
