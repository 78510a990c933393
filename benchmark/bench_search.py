"""What a `t2iverw search` query costs once the gallery is cached, and what the one-off gallery encoding costs.

Query latency: a `Searcher` over a synthetic gallery of 138,517 L2-normalised float32
embeddings (VERI-Wild's full image count), timed end to end (`Searcher.search`: tokenise,
one text encoding, the product and top-k of `search.topk`) and split into its two parts,
beside the plain float32 `torch.topk(gallery @ q)` that `search.topk` replaces, for
- tiny: the tiny CLIP of the test config (width 64);
- vit-b/16: a randomly initialised CLIP ViT-B/16 (the text tower of the real model:
  12 layers, width 512, 77 tokens; random weights cost the same as trained ones).
The goal is <= 50 ms a query on CPU.

Gallery encoding rate: `encode_gallery` (the cache build) over synthetic 128 x 96 images,
with the tiny model at 64 px and with ViT-B/16 at its native 224 px, reported as
images/s and the hours the full 138,517-image gallery would take.

    .venv/bin/python benchmark/bench_search.py                 # defaults below
    .venv/bin/python benchmark/bench_search.py --queries 20 --images 512 --vit-images 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

GALLERY = 138_517
QUERIES = ["a white SUV with a roof rack", "a red sedan with tinted windows and five-spoke wheels",
           "a black hatchback with a sunroof", "a silver pickup truck with mud on its doors"]


def model_of(kind: str):
    """The zero-shot model as `predict --model clip` builds it: clip-tiny.yaml, or clip.yaml with random weights."""
    from t2iverw.training.predict import load_zero_shot

    if kind == "tiny":
        return load_zero_shot("clip", {}, "cpu", "tiny")
    return load_zero_shot("clip", {"random_clip": {"vision_config": {"patch_size": 16}}}, "cpu")  # CLIPConfig: ViT-B


def gallery(width: int, seed: int = 0) -> torch.Tensor:
    g = torch.from_numpy(np.random.default_rng(seed).standard_normal((GALLERY, width), dtype=np.float32))
    return torch.nn.functional.normalize(g, dim=1)


def time_queries(searcher, n: int) -> dict[str, float]:
    texts = [QUERIES[k % len(QUERIES)] for k in range(n)]
    searcher.search(texts[0], 10)  # warm-up
    total, encode, product, plain = [], [], [], []
    for text in texts:
        start = time.perf_counter()
        searcher.search(text, 10)
        total.append(time.perf_counter() - start)
        start = time.perf_counter()
        feature = searcher.encode_texts([text])[0]
        encode.append(time.perf_counter() - start)
        start = time.perf_counter()
        searcher.top_of(feature, 10)
        product.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.topk(searcher.gallery @ feature, 10)
        plain.append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(v)
            for name, v in (("total", total), ("text", encode), ("product", product), ("plain", plain))}


def images(n: int):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("string"),
                                  "vehicle_id": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": photos, "image_id": [f"{k:06d}" for k in range(n)],
                                       "vehicle_id": [f"{k // 4:05d}" for k in range(n)]}, features=features)


def encode_rate(model, rows, batch_size: int) -> float:
    from t2iverw.training.retrieval import encode_gallery

    encode_gallery(model, rows.select(range(min(batch_size, len(rows)))), batch_size, "cpu")  # warm-up
    start = time.perf_counter()
    encode_gallery(model, rows, batch_size, "cpu")
    return len(rows) / (time.perf_counter() - start)


def main() -> None:
    from t2iverw.search.index import Searcher

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50, help="timed queries per model")
    parser.add_argument("--images", type=int, default=2048, help="images encoded with the tiny model")
    parser.add_argument("--vit-images", type=int, default=64, help="images encoded with ViT-B/16")
    args = parser.parse_args()
    print(f"CPU, {torch.get_num_threads()} torch threads; gallery {GALLERY:,} embeddings")
    ids = [f"{k:06d}" for k in range(GALLERY)]
    for kind, count in (("tiny", args.images), ("vit-b/16", args.vit_images)):
        model, tokenizer = model_of(kind)
        width = model.clip.config.projection_dim
        searcher = Searcher(model, tokenizer, ids, ids, gallery(width))
        t = time_queries(searcher, args.queries)
        verdict = "meets" if t["total"] <= 50 else "misses"
        print(f"{kind:9s} query: {t['total']:6.1f} ms median (text encoding {t['text']:.1f} ms, "
              f"product + top-k over {GALLERY:,} x {width}: {t['product']:.1f} ms); {verdict} the 50 ms goal "
              f"({t['total'] / 50:.2f}x of it)")
        print(f"{kind:9s} product + top-k: {t['product']:.1f} ms with the bf16 first pass, {t['plain']:.1f} ms as one "
              f"float32 product ({t['product'] / t['plain']:.2f}x)")
        rate = encode_rate(model, images(count), 64)
        print(f"{kind:9s} gallery encoding: {rate:7.1f} images/s at {model.cfg.image_size} px over {count} images; "
              f"the full gallery once: {GALLERY / rate / 3600:.2f} h")


if __name__ == "__main__":
    main()
