"""Time of `t2iverw compare`'s statistics: 5 systems at T2I-VeRW size, 10,000 resamples.

Five synthetic 4,403 x 4,403 float32 score matrices (545 identities, ~8 captions each):
N(0, 1) scores with positives shifted up by 2.2 .. 2.4 (R1 ~ 46-58, about the published
range; two systems share a shift). It times, in one process (first numba compilation excluded):
- score: the evaluator's per-query first rank / AP / INP of all five matrices (done once);
- compare: the bootstrap intervals of every system and metric plus the paired
  randomisation tests of all 10 pairs on R1 and mAP, 10,000 resamples each, for
  `--unit identity` (545 units) and `--unit query` (4,403 units).

    .venv/bin/python benchmark/bench_compare.py [--resamples 10000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from t2iverw.evaluation.compare import System, compare_systems
from t2iverw.evaluation.metrics import score_metrics

QUERIES = GALLERY = 4403
IDENTITIES = 545
SHIFTS = (2.2, 2.25, 2.3, 2.3, 2.4)  # two equal: a pair with no real difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    q_labels = rng.integers(0, IDENTITIES, QUERIES)
    g_labels = np.concatenate([np.arange(IDENTITIES), rng.integers(0, IDENTITIES, GALLERY - IDENTITIES)])
    match = q_labels[:, None] == g_labels[None, :]
    score_metrics(rng.random((4, GALLERY), np.float32), q_labels[:4], g_labels)  # compile once
    scored, systems = 0.0, []
    for i, shift in enumerate(SHIFTS):
        scores = rng.standard_normal((QUERIES, GALLERY), np.float32) + np.float32(shift) * match
        start = time.perf_counter()
        systems.append(System(f"s{i}+{shift}", Path("."), score_metrics(scores, q_labels, g_labels), {}))
        scored += time.perf_counter() - start
    print(f"{len(SHIFTS)} systems, {QUERIES:,} x {GALLERY:,}, {IDENTITIES} identities, {args.resamples:,} resamples")
    print(f"score (per-query metrics, once):  {scored:6.2f} s")
    for unit, groups in (("identity", np.unique(q_labels, return_inverse=True)[1]), ("query", np.arange(QUERIES))):
        start = time.perf_counter()
        result = compare_systems(systems, groups, resamples=args.resamples, unit=unit)
        took = time.perf_counter() - start
        significant = sum(r["p_holm"] < 0.05 for r in result["pairs"])
        print(f"compare --unit {unit:<8} ({result['units']:>4} units): {took:6.2f} s   "
              f"{len(result['pairs'])} tests, {significant} with p_holm < 0.05")
    r1 = ", ".join(f"{n} {row['R1']:.1f}" for n, row in result["systems"].items())
    print(f"R1: {r1}")


if __name__ == "__main__":
    main()
