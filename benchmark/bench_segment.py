"""Shared-encoder batched decoding vs the model card's per-prompt loop: images/s and their ratio.

Both paths run in this process on the same images and prompts (the shipped parts.yaml
unless --prompts-per-part trims it) with random weights, which is enough to measure
speed: the cost of SAM3 does not depend on what the weights say. Two models:

- tiny: a small Sam3Config, always on the CPU (what the tests use);
- full: the full-size Sam3Config() (~840M parameters) on CUDA with bf16 when present,
  else the CPU with fp32, where one image takes minutes: keep --images small there.

    .venv/bin/python benchmark/bench_segment.py --images 2                # CPU: tiny + full
    .venv/bin/python benchmark/bench_segment.py --images 32 --batch-size 8  # GPU: + projected hours

On CUDA it also prints the projected hours of the batched path for the T2I-VeRW crops
(14,668) and for all of VERI-Wild (416,314).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from t2iverw.segment.model import PartSegmenter
from t2iverw.segment.prompts import load_parts
from t2iverw.segment.tiny import sam3_processor, tiny_sam3_config
from t2iverw.synth import write_sample

CROPS = {"T2I-VeRW (14,668 crops)": 14_668, "VERI-Wild (416,314 crops)": 416_314}


def segmenter(config, device: torch.device, dtype: torch.dtype, parts) -> PartSegmenter:
    from transformers import Sam3Model

    torch.manual_seed(0)
    model = Sam3Model(config).to(device, dtype).eval()
    return PartSegmenter(model, sam3_processor(config.vision_config.backbone_config.image_size), parts)


def timed(fn, images: list[Image.Image], batch_size: int, device: torch.device) -> float:
    """Images per second of `fn` over `images` in batches."""
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        fn(images[i : i + batch_size])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def compare(name: str, seg: PartSegmenter, images: list[Image.Image], batch_size: int, device: torch.device,
            warmup: bool = True) -> float:
    if warmup:  # kernels and allocator, shared by both paths; skipped where one image takes minutes
        seg.segment(images[:1])
    batched = timed(seg.segment, images, batch_size, device)
    print(f"{name:<34} {len(seg.prompts):>7} {batched:>12.4g}", end="", flush=True)  # the loop may take long
    looped = timed(seg.segment_per_prompt, images, 1, device)
    print(f" {looped:>12.4g} {batched / looped:>7.1f}x", flush=True)
    return batched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2, help="images per path (full model on CPU: minutes each)")
    ap.add_argument("--batch-size", type=int, default=4, help="images per batched forward")
    ap.add_argument("--prompts-per-part", type=int, help="use only the first K prompts of each part")
    ap.add_argument("--skip-full", action="store_true", help="time the tiny model only")
    args = ap.parse_args()

    parts = load_parts()
    if args.prompts_per_part:
        parts = [dataclasses.replace(p, prompts=p.prompts[: args.prompts_per_part]) for p in parts]
    with tempfile.TemporaryDirectory() as tmp:
        write_sample(tmp, ids=max(1, args.images // 3 + 1), per_id=(3, 3))
        images = [Image.open(p).convert("RGB") for p in sorted(Path(tmp, "images").rglob("*.jpg"))][: args.images]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    print(f"{'model (device, dtype)':<34} {'prompts':>7} {'batched img/s':>12} {'loop img/s':>12} {'ratio':>8}")
    cpu = torch.device("cpu")
    compare("tiny (cpu, fp32)", segmenter(tiny_sam3_config(), cpu, torch.float32, parts), images, args.batch_size, cpu)
    if args.skip_full:
        return
    from transformers import Sam3Config

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    full = segmenter(Sam3Config(), device, dtype, parts)
    rate = compare(f"full Sam3Config ({device.type}, {str(dtype)[6:]})", full, images, args.batch_size, device,
                   warmup=device.type == "cuda")
    if device.type == "cuda":
        for label, n in CROPS.items():
            print(f"projected hours, batched, one GPU, {label}: {n / rate / 3600:.2f}")


if __name__ == "__main__":
    main()
