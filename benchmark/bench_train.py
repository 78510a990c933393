"""Training throughput and peak memory of the released, augmented and paper PFCVR configs, side by side.

Full size: CLIP ViT-B/16 at 384 px with every module of each config (random weights:
speed does not depend on them). Each config runs in its own process so its peak memory
is its own, on synthetic batches shaped like `data.TrainImages` output for that config:
its items per batch, four images per item when its augmentation groups copies in one
batch, its MIM mask (432 hidden cells from a seed, or 25% at random), its optimiser
(`engine.make_optimizer`). CUDA with bf16 autocast when present (the configs' own batch
of 5 items, 20 timed steps), else CPU fp32 with 2 items and 2 timed steps.

    .venv/bin/python benchmark/bench_train.py [--items N] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch

from t2iverw.training.config import PFCVR_AUG_CONFIG, PFCVR_CONFIG, PFCVR_PAPER_CONFIG, load_config
from t2iverw.training.engine import make_optimizer
from t2iverw.training.masking import mim_cells
from t2iverw.models.backbones import load_clip, save_random_clip
from t2iverw.models.pfcvr import build_model

VIT_B16 = {
    "projection_dim": 512,
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "image_size": 224, "patch_size": 16},
}
CONFIGS = {"pfcvr": PFCVR_CONFIG, "pfcvr-aug": PFCVR_AUG_CONFIG, "pfcvr-paper": PFCVR_PAPER_CONFIG}


def synthetic_batch(cfg, items: int, vocab: int, mask_id: int, device) -> dict:
    """A batch of `items` captions (x4 images when copies share a batch): 77-token captions of ~50 words."""
    g = torch.Generator().manual_seed(0)
    copies = 4 if cfg.aug and cfg.aug_grouping == "batch" else 1
    n, grid = items * copies, cfg.image_size // 16
    ids = torch.randint(0, vocab - 3, (items, cfg.text_length), generator=g).repeat_interleave(copies, 0)
    attention = torch.zeros_like(ids)
    attention[:, :60] = 1
    pick = (torch.rand(ids.shape, generator=g) < cfg.mlm_ratio) & attention.bool()
    parts = torch.rand(n, 6, grid, grid, generator=g) < 0.2
    seeds = [parts[i].any(0).flatten() if cfg.mim_mask == "release" else None for i in range(n)]
    return {k: v.to(device) for k, v in {
        "pixel_values": torch.randn(n, 3, cfg.image_size, cfg.image_size, generator=g),
        "input_ids": ids, "attention_mask": attention,
        "mlm_ids": torch.where(pick, torch.full_like(ids, mask_id), ids), "mlm_labels": torch.where(pick, ids, -100),
        "part_grid": parts, "mim_hidden": torch.stack([mim_cells(s, grid * grid, cfg.mim_ratio, g) for s in seeds]),
        "labels": (torch.arange(items) % max(1, items // 2)).repeat_interleave(copies),
    }.items()}


def run_config(name: str, items: int, steps: int, clip_dir: str) -> dict:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cfg = load_config(CONFIGS[name])
    clip, tokenizer = load_clip(clip_dir, cfg.image_size)
    model = build_model(clip, tokenizer, cfg, num_classes=1251).to(device).train()
    optimizer = make_optimizer(model, cfg)
    batch = synthetic_batch(cfg, items, len(tokenizer), tokenizer.mask_token_id, device)
    times = []
    for step in range(steps + 1):  # step 0 warms up (allocations, kernels) and is not timed
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            terms = model(batch)
        loss = sum(cfg.loss_weights[k] * v for k, v in terms.items())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    images = batch["pixel_values"].shape[0]
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"config": name, "device": torch.cuda.get_device_name() if cuda else "cpu",
            "precision": "bf16 autocast" if cuda else "fp32", "items": items, "images": images, "steps": steps,
            "images_per_s": images * steps / sum(times), "seconds_per_step": sum(times) / steps, "peak_gib": peak,
            "peak_kind": "torch.cuda.max_memory_allocated" if cuda else "process max RSS"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--items", type=int, default=5 if cuda else 2, help="image-caption items per batch")
    parser.add_argument("--steps", type=int, default=20 if cuda else 2)
    parser.add_argument("--config", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--clip-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.config:
        print(json.dumps(run_config(args.config, args.items, args.steps, args.clip_dir)))
        return
    with tempfile.TemporaryDirectory() as clip_dir:
        save_random_clip(clip_dir, VIT_B16)
        rows = []
        for name in CONFIGS:
            out = subprocess.run([sys.executable, __file__, "--config", name, "--clip-dir", clip_dir,
                                  "--items", str(args.items), "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]["images_per_s"]
    print(f"PFCVR training step, ViT-B/16 at 384 px, {rows[0]['device']} {rows[0]['precision']}, "
          f"{args.items} items per batch, {args.steps} timed steps")
    print(f"{'config':<13}{'images':>7}{'s/step':>8}{'images/s':>10}{'vs pfcvr':>9}{'peak GiB':>10}  ({rows[0]['peak_kind']})")
    for r in rows:
        print(f"{r['config']:<13}{r['images']:>7}{r['seconds_per_step']:>8.1f}{r['images_per_s']:>10.2f}"
              f"{r['images_per_s'] / base:>9.2f}{r['peak_gib']:>10.2f}")


if __name__ == "__main__":
    main()
