"""What `t2iverw eval` prints and writes: the table, bootstrap intervals, the per-query CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from t2iverw.evaluation.metrics import KS, PerQuery, rank_k
from t2iverw.storage import atomic_path

BOOTSTRAP_SAMPLES = 1000
BATCH = 100  # resamples per matrix product: bounds memory at BATCH x queries weights


def bootstrap_ci(per_query: PerQuery, level: float = 95.0, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                 ks: Sequence[int] = KS) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval (percent) of each metric, resampling queries with replacement.

    Seeded, so the same predictions always print the same interval. Metrics that are
    undecidable (a Rank-k beyond a top-K list) get no interval.
    """
    columns = {f"R{k}": rank_k(per_query, k) for k in ks} | {"mAP": per_query.ap, "mINP": per_query.inp}
    names = [n for n, v in columns.items() if v is not None]
    values = np.stack([columns[n] for n in names], axis=1)  # queries x metrics
    n = len(values)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, samples, BATCH):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(BATCH, samples - start))
        means.append(counts @ values / n)
    means = 100.0 * np.concatenate(means)
    tail = (100.0 - level) / 2
    lo, hi = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return {name: (float(a), float(b)) for name, a, b in zip(names, lo, hi)}


def metric_names(metrics: dict, ks: Sequence[int] = KS) -> dict[str, str]:
    """Column key -> printed name; mAP/mINP of top-K lists are printed as mAP@K / mINP@K."""
    suffix = f"@{metrics['at_k']}" if metrics.get("at_k") is not None else ""
    return {f"R{k}": f"R{k}" for k in ks} | {"mAP": f"mAP{suffix}", "mINP": f"mINP{suffix}"}


def format_table(metrics: dict, ks: Sequence[int] = KS) -> str:
    """A small aligned table: one header line, the values, and the interval line when `metrics['ci']` is set."""
    names = metric_names(metrics, ks)
    width = max(17 if metrics.get("ci") else 8, *(len(n) + 2 for n in names.values()))
    lines = [
        f"{metrics.get('direction', 'retrieval')}: {metrics['queries']} queries x {metrics['gallery']} gallery items",
        "".join(f"{n:>{width}}" for n in names.values()),
        "".join(f"{_fmt(metrics[k]):>{width}}" for k in names),
    ]
    if metrics.get("ci"):
        ci = metrics["ci"]
        lines.append("".join(f"{_fmt_ci(ci.get(k)):>{width}}" for k in names) + f"   {metrics['ci_level']:g}% CI")
    if metrics.get("at_k") is not None:
        lines.append(f"rankings are top-{metrics['at_k']} lists: positives not listed count as not retrieved; "
                     "Rank-k beyond a list is n/a unless its positive was listed")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _fmt_ci(bounds: tuple[float, float] | None) -> str:
    return "" if bounds is None else f"[{bounds[0]:.2f}, {bounds[1]:.2f}]"


def write_per_query(path: str | Path, query_ids: Sequence[str], per_query: PerQuery) -> None:
    """query_id, positives, rank of the first positive (empty if not retrieved), AP, INP, for error analysis."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["query_id", "positives", "first_rank", "ap", "inp"])
        for row in zip(query_ids, per_query.n_pos.tolist(), per_query.first_rank.tolist(),
                       per_query.ap.tolist(), per_query.inp.tolist()):
            qid, n_pos, first, ap, inp = row
            out.writerow([qid, n_pos, first or "", f"{ap:.6f}", f"{inp:.6f}"])
