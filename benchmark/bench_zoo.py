"""Every model's tiny config on one synthetic sample, one run: train, predict, then one leaderboard.

    python benchmark/bench_zoo.py [--work DIR] [--ids 24] [--out benchmark/leaderboard]

Trains each trainable model of `t2iverw models` with `--config tiny` on the demo's sample,
ranks with zero-shot CLIP (`clip-tiny`: a random CLIP, so its row is the chance floor of
an untrained tower), and writes the leaderboard with the paper's published rows. The rows
in benchmark/RESULTS.md are this command's output: CPU, random backbones, 24 identities,
so they check that every contestant learns, not how it compares at full size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "t2iverw.cli"]


def t2iverw(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("zoo-work"))
    parser.add_argument("--ids", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmark/leaderboard"))
    args = parser.parse_args()

    from t2iverw import models
    from t2iverw.demo import run_demo

    dataset = args.work / "demo" / "dataset"
    if not dataset.exists():
        run_demo(args.work / "demo", ids=args.ids, echo=lambda _: None)
    runs = []
    for name in models.MODELS:
        run = args.work / "runs" / f"{name}-tiny"
        start = time.perf_counter()
        if models.get(name).trainable:
            t2iverw("train", "--model", name, "--config", "tiny", "--dataset", str(dataset), "--out", str(run))
            t2iverw("predict", "--run", str(run), "--dataset", str(dataset), "--full")
        else:
            run.mkdir(parents=True, exist_ok=True)
            t2iverw("predict", "--model", name, "--config", "tiny", "--dataset", str(dataset), "--full",
                    "--out", str(run / "ranks.json"))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        runs.append(str(run))
    t2iverw("leaderboard", *runs, "--dataset", str(dataset), "--out", str(args.out))
    print((args.out / "LEADERBOARD.md").read_text().split("## ")[0])


if __name__ == "__main__":
    main()
