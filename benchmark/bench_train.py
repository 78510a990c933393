"""Training throughput and peak memory of the released, augmented and paper PFCVR configs, side by side.

Full size: CLIP ViT-B/16 at 384 px with every module of each config (random weights:
speed does not depend on them). Each config runs in its own process so its peak memory
is its own, on synthetic batches shaped like `data.TrainImages` output for that config:
its items per batch, four images per item when its augmentation groups copies in one
batch, its MIM mask (432 hidden cells from a seed, or 25% at random), its optimiser
(`engine.make_optimizer`). CUDA with bf16 autocast when present (the configs' own batch
of 5 items, 20 timed steps), else CPU fp32 with 2 items and 2 timed steps.

    .venv/bin/python benchmark/bench_train.py [--items N] [--steps N]

`--data-only` times the input pipeline alone (no model) on a synthetic export: images/s of
`data.TrainImages` against `OldTrainImages` (a copy, kept here only, of the loader before it
decoded each original once and tokenized each caption once), for pfcvr and pfcvr-aug (copies
generated from the original: `aug_source: generated`, the path that decoded it four times);
then the share of a training step spent waiting for data, with the tiny model on CPU.

    .venv/bin/python benchmark/bench_train.py --data-only [--batches N] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from t2iverw.models.pfcvr import PFCVR
from t2iverw.constants import caption_list
from t2iverw.training.data import TrainImages, decode_rgb, collate, photometric, tokenize
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


class OldTrainImages(TrainImages):
    """The loader as it was before the decode-once rewrite (commit f747e4d), for comparison only:
    each copy decodes the original again and each item tokenizes its caption again."""

    def _tokenize_items(self):
        return None, None

    def __getitem__(self, index: int):
        item = index // self.per_epoch
        row_index, k = self.items[item]
        row = self.rows[row_index]
        tokens = tokenize(self.tokenizer, [caption_list(row["captions"], row["caption"])[k]], self.cfg.text_length)
        text = {"input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0],
                "labels": torch.tensor(self.label[row["vehicle_id"]]), "item": torch.tensor(item)}
        if self.per_epoch > 1:
            return self._old_copy(row, self.variants[index % self.per_epoch], self._masked(text))
        text = self._masked(text)
        copies = [self._old_copy(row, variant, text) for variant in self.variants]
        return copies if self.cfg.aug else copies[0]

    def _old_copy(self, row: dict, variant: str, text: dict) -> dict:
        if variant != "original" and self.cfg.aug_source == "release":
            pixels = decode_rgb(row[f"image_{variant}"])
        else:
            pixels = photometric(decode_rgb(row["image"]), variant, self.cfg)
        return self._copy(row, pixels, torch.cat([self._parts(row), self._seed(row)[None]]), text)


def synthetic_export(work: Path, ids: int) -> Path:
    """An export of `ids` drawn identities (3-5 images each) with one caption per image and its true part grids."""
    from t2iverw.build import BuildDir
    from t2iverw.export import export_dataset
    from t2iverw.grid import mask_to_grid, pack_grid
    from t2iverw.index import build_index
    from t2iverw.runner import open_log
    from t2iverw.split import make_split
    from t2iverw.synth import read_truth, write_sample

    write_sample(work / "src", ids=ids, per_id=(3, 5), seed=0)
    build_index(work / "src", work / "build")
    make_split(work / "build", test_ratio=0.3, seed=0)
    bd = BuildDir.open(work / "build")
    rows = bd.images(["image_id", "vehicle_id", "color", "type", "model"]).to_pylist()
    with open_log(bd, "captions", "main", source="model", settings={"model": "bench"}) as log:
        log.append({"image_id": r["image_id"], "caption_id": r["image_id"], "status": "ok",
                    "text": f"A {r['color']} {r['type']}, a {r['model']}, with a roof rack and tinted windows."}
                   for r in rows)
    with open_log(bd, "parts", "main", source="truth", settings={"model": "bench"}) as log:
        log.append({"image_id": r["image_id"], "status": "ok", "grid": {"shape": [24, 24], "cells": [
            pack_grid(mask_to_grid(m)) for m in read_truth(work / "src", f"{r['vehicle_id']}/{r['image_id']}")]}}
            for r in rows)
    export_dataset(work / "build", work / "ds")
    return work / "ds"


def loader_rate(cls, split, tokenizer, cfg, batches: int, workers: int) -> float:
    """Images per second of `batches` shuffled batches (the data set's construction included)."""
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    start = time.perf_counter()
    data = cls(split, tokenizer, cfg, cfg.image_size // 16, PFCVR.batch_needs(cfg))
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, num_workers=workers)
    images = 0
    for i, batch in enumerate(loader):
        images += batch["pixel_values"].shape[0]
        if i + 1 == batches:
            break
    return images / (time.perf_counter() - start)


def waiting_share(cls, split, tokenizer, cfg, clip_dir: str, steps: int, workers: int) -> float:
    """The share of wall time a training loop spends in `next(loader)`, tiny model, CPU fp32."""
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    clip, tok = load_clip(clip_dir, cfg.image_size)
    model = build_model(clip, tok, cfg, num_classes=len(split.classes)).train()
    optimizer = make_optimizer(model, cfg)
    loader = DataLoader(cls(split, tok, cfg, cfg.image_size // 8), batch_size=cfg.batch_size, shuffle=True,
                        collate_fn=collate, num_workers=workers, persistent_workers=workers > 0)
    epochs = (batch for _ in iter(int, 1) for batch in loader)  # as many epochs as the steps need
    waited = total = 0.0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(epochs)
        t1 = time.perf_counter()
        terms = model(batch)
        sum(cfg.loss_weights[k] * v for k, v in terms.items()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # step 0 starts the workers and allocates
            waited, total = waited + t1 - t0, total + time.perf_counter() - t0
    return waited / total


def data_only(batches: int, workers: int, ids: int) -> None:
    from t2iverw.training.config import TINY_CONFIG
    from t2iverw.training.data import load_split, split_train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"writing a synthetic export of {ids} identities ...", flush=True)
        split = split_train(load_split(synthetic_export(work, ids), "train"), 0, 0)
        save_random_clip(work / "clip", yaml.safe_load(TINY_CONFIG.read_text())["random_clip"])
        _, tokenizer = load_clip(work / "clip", 64)
        print(f"\nloader alone (no model): {batches} batches per config, {workers} workers, "
              f"{len(split.items)} items, CPU; images/s")
        print(f"{'config':<28}{'before':>9}{'after':>9}{'after/before':>14}")
        for name, overrides in (("pfcvr", {}), ("pfcvr-aug (generated copies)", {"aug_source": "generated"})):
            cfg = load_config(CONFIGS[name.split()[0]], {**overrides, "num_workers": workers})
            old, new = (loader_rate(cls, split, tokenizer, cfg, batches, workers) for cls in (OldTrainImages, TrainImages))
            print(f"{name:<28}{old:9.1f}{new:9.1f}{new / old:14.2f}")
        print(f"\nshare of a training step spent waiting for data (tiny model, CPU fp32, {workers} workers, 10 steps)")
        print(f"{'config':<28}{'before':>9}{'after':>9}")
        for name, overrides in (("tiny", {}), ("tiny-aug (generated)", {"aug": True, "aug_source": "generated",
                                                                         "geometric_aug": True})):
            cfg = load_config(TINY_CONFIG, {**overrides, "num_workers": workers})
            old, new = (waiting_share(cls, split, tokenizer, cfg, str(work / "clip"), 10, workers)
                        for cls in (OldTrainImages, TrainImages))
            print(f"{name:<28}{old:9.1%}{new:9.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--items", type=int, default=5 if cuda else 2, help="image-caption items per batch")
    parser.add_argument("--steps", type=int, default=20 if cuda else 2)
    parser.add_argument("--config", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--clip-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-only", action="store_true", help="time the input pipeline alone (see above)")
    parser.add_argument("--batches", type=int, default=8, help="batches per loader with --data-only")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers with --data-only")
    parser.add_argument("--ids", type=int, default=40, help="synthetic identities with --data-only")
    args = parser.parse_args()
    if args.data_only:
        data_only(args.batches, args.workers, args.ids)
        return
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
