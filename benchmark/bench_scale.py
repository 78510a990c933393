"""Peak memory and throughput of every CPU stage of a build, at several sizes, to show what grows with N.

For each N it writes a VERI-Wild-shaped tree of N small crops (re-encoded copies of a few
hundred drawn vehicles, 48 px high: the stages' cost per image is what is measured, not the
decoder's), then runs each stage as its own `t2iverw` process and reads that process's
peak RSS (`os.wait4`). Random part grids stand in for `segment` (SAM3), written untimed:

    index -> caption --backend template -> the same caption again (a resume that finds every
          image done) -> split -> (part grids) -> export -> export --no-images
          -> export --format pfcvr -> import-release (of that release) -> eval --baseline random

`eval` scores the test split (30% of the identities: ~0.3 N captions against ~0.3 N images).
It prints images/s and peak RSS per stage and size, the RSS growth in KiB per image between
the smallest and the largest N with the ratio of the two figures, and a linear extrapolation
of the peak RSS to VERI-Wild's 416,314 images.

    .venv/bin/python benchmark/bench_scale.py --images 10000 100000
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from t2iverw.synth import make_vehicle, render

VERI_WILD = 416_314
PER_ID = 8
POOL = 200
HEIGHT = 48


def write_tree(root: Path, images: int, seed: int = 0) -> None:
    """A VERI-Wild layout of `images` small crops; identity k has make_vehicle(k)'s colour, type and model."""
    rng = random.Random(seed)
    pool = []
    for k in range(POOL):
        image, _, _ = render(make_vehicle(k, seed), rng)
        image = image.resize((max(1, image.width * HEIGHT // image.height), HEIGHT))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        pool.append(buf.getvalue())
    lines = ["id;Camera ID;Time;Model;Type;Color"]
    vehicle = None
    for n in range(images):
        if n % PER_ID == 0:
            vehicle = make_vehicle(n // PER_ID, seed)
        image_id = f"{n + 1:07d}"
        path = root / "images" / vehicle.vehicle_id / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pool[n % POOL])
        lines.append(f"{vehicle.vehicle_id}/{image_id};{n % 174 + 1};2018-03-01 06:00:00;{vehicle.model};"
                     f"{vehicle.type};{vehicle.color}")
    (root / "train_test_split").mkdir(parents=True, exist_ok=True)
    (root / "train_test_split" / "vehicle_info.txt").write_text("\n".join(lines) + "\n")


def write_parts(build: Path, seed: int = 0) -> None:
    """Six random 24x24 part grids per image, logged as the segment stage logs them."""
    import numpy as np

    from t2iverw.build import BuildDir
    from t2iverw.grid import pack_grid
    from t2iverw.runner import open_log

    bd = BuildDir.open(build)
    ids = bd.images(["image_id"])["image_id"].to_pylist()
    rng = np.random.default_rng(seed)
    with open_log(bd, "parts", "main", source="model", settings={"model": "bench"}) as log:
        log.append({"image_id": i, "status": "ok",
                    "grid": {"shape": [24, 24], "cells": [pack_grid(rng.random((24, 24)) < 0.2) for _ in range(6)]}}
                   for i in ids)


def stages(work: Path) -> list[tuple[str, list[str]]]:
    src, build = str(work / "src"), str(work / "build")
    return [
        ("index", ["index", src, "--out", build]),
        ("caption (template)", ["caption", build, "--backend", "template"]),
        ("caption again (all done)", ["caption", build, "--backend", "template"]),  # a resume: every image decided
        ("split", ["split", build]),
        ("parts", None),  # what `segment` (SAM3) would write: random grids, in this process, untimed
        ("export", ["export", build, "--out", str(work / "ds")]),
        ("export --no-images", ["export", build, "--out", str(work / "ds-ann"), "--no-images"]),
        ("export --format pfcvr", ["export", build, "--out", str(work / "release" / "T2I_VeRi_new"),
                                   "--format", "pfcvr"]),
        ("import-release", ["import-release", str(work / "release" / "T2I_VeRi_new"), "--out", str(work / "imported")]),
        ("eval (random, test split)", ["eval", str(work / "ds-ann"), "--baseline", "random", "--json"]),
    ]


def run_stage(args: list[str], log: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one `t2iverw` process."""
    exe = Path(sys.executable).with_name("t2iverw")
    start = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.Popen([str(exe), *args], stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"t2iverw {' '.join(args)} failed; see {log}")
    return seconds, usage.ru_maxrss / 1024


def measure(n: int, base: Path, until: str | None = None) -> dict[str, tuple[float, float]]:
    work = base / f"n{n}"
    print(f"writing {n:,} crops ...", flush=True)
    write_tree(work / "src", n)
    found = {}
    for name, args in stages(work):
        if args is None:  # in a child: Linux carries a parent's peak RSS into every process it forks and execs
            child = multiprocessing.get_context("spawn").Process(target=write_parts, args=(work / "build",))
            child.start()
            child.join()
            continue
        found[name] = run_stage(args, work / "log.txt")
        print(f"  {n:>8,}  {name:<28}{found[name][0]:8.1f} s {n / found[name][0]:9.0f} img/s "
              f"{found[name][1]:8.0f} MiB", flush=True)
        if name == until:
            break
    shutil.rmtree(work / "src", ignore_errors=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary directory)")
    parser.add_argument("--until", choices=[name for name, args in stages(Path(".")) if args],
                        help="stop after this stage (e.g. index: measure the first stage alone)")
    args = parser.parse_args()
    sizes = sorted(args.images)
    base = args.keep or Path(tempfile.mkdtemp(prefix="t2iverw-bench-scale-"))
    try:
        results = {n: measure(n, base, args.until) for n in sizes}
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    lo, hi = sizes[0], sizes[-1]
    print(f"\npeak RSS per stage (MiB; one process each), images/s; growth between {lo:,} and {hi:,} images")
    head = "".join(f"{f'{n:,} MiB':>12}{'img/s':>8}" for n in sizes)
    print(f"{'stage':<28}{head}{'ratio':>7}{'KiB/img':>9}{f'@{VERI_WILD:,} MiB':>15}")
    for name in results[lo]:
        cells = "".join(f"{results[n][name][1]:12.0f}{n / results[n][name][0]:8.0f}" for n in sizes)
        r_lo, r_hi = results[lo][name][1], results[hi][name][1]
        slope = (r_hi - r_lo) * 1024 / (hi - lo) if hi > lo else float("nan")  # KiB per image
        at_veri_wild = r_hi + slope * (VERI_WILD - hi) / 1024
        print(f"{name:<28}{cells}{r_hi / r_lo:7.2f}{slope:9.2f}{at_veri_wild:15.0f}")


if __name__ == "__main__":
    main()
