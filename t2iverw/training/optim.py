"""Adam's parameter groups and the warm-up + cosine schedule, as the released code sets them.

Released rule (solver/build.py), applied to the release's parameter names in this order:
names containing `cross` get lr x5; then every bias gets lr x2 and no weight decay; then
`classifier` and `mlm_head` get lr x5 (their biases keep no weight decay). Everything
else, including the query decoder, part queries, part pooling and the MIM decoder, runs
at the base rate. Our modules map onto those names: `mlm.cross_attn` = cross_attn,
`mlm.cross_transformer` = cross_modal_transformer, `mlm.head` = mlm_head, `classifier`.

`lr_groups: new_modules` is the paper's reading: every randomly initialised module at x5.
"""

from __future__ import annotations

import math

from torch import nn

from t2iverw.training.config import Config

RELEASE_CROSS = ("mlm.cross_attn.", "mlm.cross_transformer.")  # the release's `cross` in the name
RELEASE_HEADS = ("classifier.", "mlm.head.")  # the release's `classifier` / `mlm_head`


def is_bias(name: str) -> bool:
    return "bias" in name.rsplit(".", 1)[-1]


def rate(name: str, cfg: Config, backbone: tuple[str, ...] = ("clip.",)) -> tuple[float, float]:
    """(learning rate, weight decay) of the parameter called `name`; `backbone`: the pretrained prefixes."""
    factor, decay = 1.0, cfg.weight_decay
    if cfg.lr_groups == "release":
        if name.startswith(RELEASE_CROSS):
            factor = cfg.new_module_lr_factor
        if is_bias(name):
            factor, decay = cfg.bias_lr_factor, cfg.weight_decay_bias
        if name.startswith(RELEASE_HEADS):
            factor = cfg.new_module_lr_factor
    else:
        new = not name.startswith(backbone)
        if is_bias(name):
            decay = cfg.weight_decay_bias
        factor = cfg.new_module_lr_factor if new else (cfg.bias_lr_factor if is_bias(name) else 1.0)
    return cfg.lr * factor, decay


def param_groups(model: nn.Module, cfg: Config) -> list[dict]:
    """Adam's groups: the trainable parameters grouped by (lr, weight decay), each group naming its parameters.

    The released code makes one group per parameter; grouping equal settings is the same
    optimisation with far fewer, larger kernel launches.
    """
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            lr, decay = rate(name, cfg, getattr(model, "backbone_prefixes", ("clip.",)))
            group = groups.setdefault((lr, decay), {"params": [], "lr": lr, "weight_decay": decay, "names": []})
            group["params"].append(p)
            group["names"].append(name)
    return list(groups.values())


def warmup_cosine(step: float, warmup: float, total: float, start_factor: float) -> float:
    """LR multiplier: linear from `start_factor` to 1 over `warmup` steps, then cosine to 0 at `total`."""
    if step < warmup:
        return start_factor + (1 - start_factor) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def timm_cosine(t: float, warmup: float, total: float, start_factor: float, floor: float) -> float:
    """LR multiplier of timm's CosineLRScheduler (one cycle, no warm-up prefix; solver/cosine_lr.py:61-94
    in IVT's code) at time t: linear from `start_factor` over `warmup`, then the cosine over the
    whole of [0, total] down to `floor`, and `floor` from `total` on."""
    if t < warmup:
        return start_factor + t * (1 - start_factor) / warmup
    if t >= total:
        return floor
    return floor + 0.5 * (1 - floor) * (1 + math.cos(math.pi * t / total))


def lr_factor(step: int, steps_per_epoch: int, cfg: Config) -> float:
    """The multiplier at optimizer step `step`: per epoch (released: constant within an epoch,
    0.1x throughout the first) or per batch. `timm-cosine` trains epoch e at t = e + 1, as IVT's
    loop calls scheduler.step(epoch) for epoch = 1..N before each epoch (processor.py:105-109)."""
    if cfg.schedule == "timm-cosine":
        t = step // steps_per_epoch + 1 if cfg.lr_step == "epoch" else step / steps_per_epoch + 1
        return timm_cosine(t, cfg.warmup_epochs, cfg.epochs, cfg.warmup_factor, cfg.lr_min_factor)
    if cfg.lr_step == "epoch":
        return warmup_cosine(step // steps_per_epoch, cfg.warmup_epochs, cfg.epochs, cfg.warmup_factor)
    return warmup_cosine(step, cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch, cfg.warmup_factor)
