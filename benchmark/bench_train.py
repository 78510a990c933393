"""Training throughput and peak memory of the full PFCVR configuration (ViT-B/16 at 384 px).

Random weights (speed does not depend on them). Each variant runs in its own process so
peak memory is its own: IRRA (global losses only), +PLFA, +PLFA+BMRIA. Picks CUDA with
bf16 autocast when present, else CPU fp32 with a small batch and a handful of steps.

    .venv/bin/python benchmark/bench_train.py [--batch-size N] [--steps N]
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

from t2iverw.baseline.config import PFCVR_CONFIG, load_config
from t2iverw.baseline.model import build_model, load_clip, save_random_clip

VIT_B16 = {
    "projection_dim": 512,
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "image_size": 224, "patch_size": 16},
}
VARIANTS = {"IRRA": (False, False), "+PLFA": (True, False), "+PLFA+BMRIA": (True, True)}


def synthetic_batch(batch: int, cfg, vocab: int, mask_id: int, device) -> dict:
    """A batch shaped like data.TrainImages output: 77-token captions of ~50 words, 15% MLM targets."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab - 3, (batch, cfg.text_length), generator=g)
    attention = torch.zeros_like(ids)
    attention[:, :60] = 1
    labels = torch.full_like(ids, -100)
    pick = torch.rand(ids.shape, generator=g) < cfg.mlm_ratio
    pick &= attention.bool()
    labels[pick] = ids[pick]
    grid = cfg.image_size // 16
    return {k: v.to(device) for k, v in {
        "pixel_values": torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g),
        "input_ids": ids, "attention_mask": attention,
        "mlm_ids": torch.where(pick, torch.full_like(ids, mask_id), ids), "mlm_labels": labels,
        "part_grid": torch.rand(batch, 6, grid, grid, generator=g) < 0.2,
        "labels": torch.arange(batch) % max(1, batch // 2),
    }.items()}


def run_variant(name: str, batch: int, steps: int, clip_dir: str) -> dict:
    plfa, bmria = VARIANTS[name]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cfg = load_config(PFCVR_CONFIG, {"plfa": plfa, "bmria": bmria})
    clip, tokenizer = load_clip(clip_dir, cfg.image_size)
    model = build_model(clip, tokenizer, cfg, num_classes=1251).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data = synthetic_batch(batch, cfg, len(tokenizer), tokenizer.mask_token_id, device)
    times = []
    for step in range(steps + 1):  # step 0 warms up (allocations, kernels) and is not timed
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            terms = model(data)
        loss = sum(cfg.loss_weights[k] * v for k, v in terms.items())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"variant": name, "device": torch.cuda.get_device_name() if cuda else "cpu", "precision": "bf16" if cuda else "fp32",
            "batch": batch, "steps": steps, "images_per_s": batch * steps / sum(times),
            "peak_gib": peak, "peak_kind": "max_memory_allocated" if cuda else "process max RSS"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--batch-size", type=int, default=64 if cuda else 2)
    parser.add_argument("--steps", type=int, default=20 if cuda else 3)
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--clip-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.batch_size, args.steps, args.clip_dir)))
        return
    with tempfile.TemporaryDirectory() as clip_dir:
        save_random_clip(clip_dir, VIT_B16)
        rows = []
        for name in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--variant", name, "--clip-dir", clip_dir,
                                  "--batch-size", str(args.batch_size), "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]["images_per_s"]
    print(f"PFCVR training step, ViT-B/16 at 384 px, {rows[0]['device']} {rows[0]['precision']}, "
          f"batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'variant':<14}{'images/s':>10}{'vs IRRA':>9}{'peak GiB':>10}  ({rows[0]['peak_kind']})")
    for r in rows:
        print(f"{r['variant']:<14}{r['images_per_s']:>10.2f}{r['images_per_s'] / base:>9.2f}{r['peak_gib']:>10.2f}")


if __name__ == "__main__":
    main()
