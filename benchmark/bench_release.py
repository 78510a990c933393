"""Throughput of the release round trip at T2I-VeRW scale, against `index` + `export` of the same images.

It writes a VERI-Wild-shaped tree of N crops (default 15,000, T2I-VeRW's 14,668 rounded
up; small JPEGs of real crop sizes, re-encoded variants of a few hundred drawn images),
then times, in this process:

1. `index` of the tree;                         (images decoded and hashed)
2. caption and part records for every image, and a 7:3 split (untimed: what the model
   stages would have written);
3. `export` (Parquet, images embedded) of that build;
4. `export --format pfcvr` of that build: the authors' layout, a release of the same images;
5. `import-release` of that release;             (images decoded and hashed, part files parsed)
6. `export` (Parquet) of the imported build.

and prints images per second for each, with import against index and the two Parquet
exports against each other.

    .venv/bin/python benchmark/bench_release.py                 # 15,000 images
    .venv/bin/python benchmark/bench_release.py --images 2000   # a quick look
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from t2iverw.build import BuildDir
from t2iverw.export import export_dataset
from t2iverw.grid import pack_grid
from t2iverw.index import build_index
from t2iverw.release.importer import import_release
from t2iverw.release.pfcvr import export_pfcvr
from t2iverw.runner import open_log
from t2iverw.split import make_split
from t2iverw.synth import make_vehicle, render

PER_ID = 8  # T2I-VeRW: 14,668 images of 1,796 identities
VARIANTS = 300


def write_tree(root: Path, images: int, seed: int = 0) -> None:
    """A VERI-Wild layout of `images` crops: drawn vehicles, each JPEG one of VARIANTS encodings."""
    rng = random.Random(seed)
    pool = []
    for k in range(VARIANTS):
        image, _, _ = render(make_vehicle(k, seed), rng)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        pool.append(buf.getvalue())
    lines = ["id;Camera ID;Time;Model;Type;Color"]
    for n in range(images):
        vid, image_id = f"{n // PER_ID + 1:05d}", f"{n + 1:06d}"
        path = root / "images" / vid / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pool[n % VARIANTS])
        lines.append(f"{vid}/{image_id};{n % 174 + 1};2018-03-01 06:00:00;Galt-Nova;SUV;red")
    (root / "train_test_split").mkdir(parents=True, exist_ok=True)
    (root / "train_test_split" / "vehicle_info.txt").write_text("\n".join(lines) + "\n")


def annotate(build: Path, seed: int = 0) -> None:
    """One caption and random part grids per image, written as the model stages would."""
    bd = BuildDir.open(build)
    rows = bd.images(["image_id", "color", "type"]).to_pylist()
    rng = np.random.default_rng(seed)
    with open_log(bd, "captions", "main", source="model", settings={"model": "bench"}) as log:
        log.append({"image_id": r["image_id"], "caption_id": r["image_id"], "status": "ok",
                    "text": f"A {r['color']} {r['type']} with a roof rack, seen from the side."} for r in rows)
    with open_log(bd, "parts", "main", source="model", settings={"model": "bench"}) as log:
        log.append({"image_id": r["image_id"], "status": "ok",
                    "grid": {"shape": [24, 24], "cells": [pack_grid(rng.random((24, 24)) < 0.2) for _ in range(6)]}}
                   for r in rows)
    make_split(build, test_ratio=0.3, seed=0)


def timed(label: str, images: int, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"  {label:34s} {seconds:8.1f} s   {images / seconds:8.0f} images/s", flush=True)
    return images / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=15000)
    parser.add_argument("--workers", type=int, default=8, help="decoding threads of index and import-release")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary directory)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="t2iverw-bench-release-"))
    try:
        print(f"writing {args.images:,} crops to {work} ...", flush=True)
        write_tree(work / "src", args.images)
        n = args.images
        print(f"\n{n:,} images, {args.workers} decoding threads, wall-clock time on this machine")
        rate = {"index": timed("index", n, lambda: build_index(work / "src", work / "build", workers=args.workers))}
        annotate(work / "build")
        rate["export"] = timed("export (Parquet, images)", n, lambda: export_dataset(work / "build", work / "ds"))
        rate["pfcvr"] = timed("export --format pfcvr", n,
                              lambda: export_pfcvr(work / "build", work / "release" / "T2I_VeRi_new"))
        rate["import"] = timed("import-release", n, lambda: import_release(
            work / "release" / "T2I_VeRi_new", work / "imported", workers=args.workers))
        rate["export imported"] = timed("export (Parquet) of the import", n,
                                        lambda: export_dataset(work / "imported", work / "ds2"))
        print(f"\n  import-release = {rate['import'] / rate['index']:.2f} x index's rate; "
              f"export --format pfcvr = {rate['pfcvr'] / rate['export']:.2f} x the Parquet export's; "
              f"Parquet export of the import = {rate['export imported'] / rate['export']:.2f} x of the index build")
        print(f"  index + export: {n / (n / rate['index'] + n / rate['export']):.0f} images/s;  "
              f"import-release + export: {n / (n / rate['import'] + n / rate['export imported']):.0f} images/s")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
