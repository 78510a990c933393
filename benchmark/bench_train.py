"""Training throughput and peak memory of every model's full-size config, side by side in one run.

Each shipped full-size config (pfcvr, pfcvr-aug, pfcvr-paper, irra, irra-pfcvr, ivt, cpsl,
cpsl-masks) runs in its own process so that its peak memory is its own. The model is built
through the registry exactly as `t2iverw train` builds it (`prepare`, `build`), its CLIP
backbone a randomly initialised ViT-B/16 (speed does not depend on the weights; the hub is not
reachable here), and it trains on real batches of its own loader (`data.TrainImages` with the
model's `batch_needs` and text expansion, `collate`) from a small synthetic export at the
config's image size: four images per item where copies share a batch, three texts per item for
IVT. CUDA with bf16 autocast when present (5 items, 20 timed steps), else CPU fp32 with 2 items
and 2 timed steps.

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
from t2iverw.models.backbones import load_clip, save_random_clip
from t2iverw.models.pfcvr import build_model

VIT_B16 = {
    "projection_dim": 512,
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "image_size": 224, "patch_size": 16},
}
CONFIGS = {"pfcvr": PFCVR_CONFIG, "pfcvr-aug": PFCVR_AUG_CONFIG, "pfcvr-paper": PFCVR_PAPER_CONFIG}


FULL_CONFIGS = ("pfcvr", "pfcvr-aug", "pfcvr-paper", "irra", "irra-pfcvr", "ivt", "cpsl", "cpsl-masks")


def run_config(name: str, items: int, steps: int, dataset: str, work: str) -> dict:
    """One config's training steps on its own loader's batches (see the module docstring)."""
    from t2iverw import models
    from t2iverw.training.config import ClipBackboneConfig, resolve_config
    from t2iverw.training.data import load_split, split_train

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cfg = load_config(resolve_config(name), {"batch_size": items, "num_workers": 0})
    if isinstance(cfg, ClipBackboneConfig):
        cfg.random_clip = VIT_B16  # the released backbone's architecture, random weights
    if cfg.aug and cfg.aug_source == "release":
        cfg.aug_source = "generated"  # the synthetic export has no release copies; the step costs the same
    model_class = models.get(cfg.model)
    split = split_train(load_split(dataset, "train"), 0, 0)
    model_class.prepare(cfg, Path(work))
    model, tokenizer = model_class.build(cfg, len(split.classes), Path(work))
    model = model.to(device).train()
    data = TrainImages(split, tokenizer, cfg, getattr(model, "grid", 1), model_class.batch_needs(cfg),
                       model_class.image_mean, model_class.image_std,
                       model_class.train_texts if model_class.expands_texts() else None)
    batch = collate([data[i] for i in range(items)])
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    optimizer = make_optimizer(model, cfg)
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
    return {"config": name, "model": cfg.model, "device": torch.cuda.get_device_name() if cuda else "cpu",
            "precision": "bf16 autocast" if cuda else "fp32", "items": items, "images": images,
            "image_size": cfg.image_size, "steps": steps, "parameters": sum(p.numel() for p in model.parameters()),
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
    parser.add_argument("--config", choices=FULL_CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="+", choices=FULL_CONFIGS, help="time these configs only")
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--data-only", action="store_true", help="time the input pipeline alone (see above)")
    parser.add_argument("--batches", type=int, default=8, help="batches per loader with --data-only")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers with --data-only")
    parser.add_argument("--ids", type=int, default=40, help="synthetic identities with --data-only")
    args = parser.parse_args()
    if args.data_only:
        data_only(args.batches, args.workers, args.ids)
        return
    if args.config:
        print(json.dumps(run_config(args.config, args.items, args.steps, args.dataset, args.work)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print("writing a synthetic export ...", flush=True)
        dataset = synthetic_export(Path(tmp), 8)
        for name in args.only or FULL_CONFIGS:
            work = Path(tmp) / name
            work.mkdir()
            done = subprocess.run([sys.executable, __file__, "--config", name, "--dataset", str(dataset), "--work",
                                   str(work), "--items", str(args.items), "--steps", str(args.steps)],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {name}: {rows[-1]['images_per_s']:.2f} images/s", flush=True)
    base = rows[0]["images_per_s"]
    print(f"\ntraining step of each full-size config, {rows[0]['device']} {rows[0]['precision']}, {args.items} items "
          f"per batch, {args.steps} timed steps, random ViT-B/16 backbones")
    print(f"{'config':<13}{'model':<7}{'params':>8}{'px':>5}{'images':>7}{'s/step':>8}{'images/s':>10}"
          f"{'vs first':>9}{'peak GiB':>10}  ({rows[0]['peak_kind']})")
    for r in rows:
        print(f"{r['config']:<13}{r['model']:<7}{r['parameters'] / 1e6:>7.0f}M{r['image_size']:>5}{r['images']:>7}"
              f"{r['seconds_per_step']:>8.1f}{r['images_per_s']:>10.2f}{r['images_per_s'] / base:>9.2f}"
              f"{r['peak_gib']:>10.2f}")

if __name__ == "__main__":
    main()
