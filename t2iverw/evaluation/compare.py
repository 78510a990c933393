"""Compare retrieval systems on the same test queries: intervals per system, paired tests per pair.

Each system's per-query results (first-hit rank, AP, INP) are computed once by the
evaluator; everything after that resamples or re-signs *indices*, never re-ranks.

Resampling unit: captions of one vehicle are not independent (they describe the same
images), so by default (`unit="identity"`) a resample draws vehicle identities with
replacement and takes all their queries together; `unit="query"` draws single queries.

- Intervals: percentile bootstrap over units of each metric's mean (`ci` level).
- Pairs: a paired randomisation (sign-flip) test on the per-unit sums of per-query AP
  (mAP) and first-hit indicator (R1). Under the null "A and B are exchangeable", each
  unit's A and B values may be swapped, which flips the sign of its difference; the
  p value is the share of sign patterns whose |mean difference| reaches the observed
  one. With 2**units <= `resamples` every pattern is enumerated (an exact p); otherwise
  `resamples` random patterns are drawn and p = (1 + hits) / (1 + resamples). p values
  are Holm-corrected across the pairs of each metric.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from t2iverw.errors import T2IError
from t2iverw.evaluation.inputs import GroundTruth, ground_truth
from t2iverw.evaluation.judge import score_against
from t2iverw.evaluation.metrics import KS, PerQuery, rank_k, summarize
from t2iverw.evaluation.predictions import load_scores, read_ranks, resolve_ranks

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
TESTED = ("R1", "mAP")  # the paired test's metrics: first-hit indicator and AP
UNITS = ("identity", "query")
RESAMPLES = 10_000
BATCH = 500  # resamples per matrix product: bounds memory at BATCH x units weights
RANKS, SCORE_FILES = "ranks.json", ("scores.npz", "scores.npy")


@dataclass(frozen=True)
class System:
    name: str
    path: Path
    per_query: PerQuery
    meta: dict


def parse_spec(spec: str) -> tuple[str, Path]:
    """`name=PATH` or `PATH` -> (name, path); the name defaults to the run directory's name."""
    name, sep, rest = spec.partition("=")
    if sep and name and not Path(spec).exists():
        path = Path(rest)
    else:
        name, path = "", Path(spec)
    if not name:
        name = path.name if path.is_dir() else path.parent.name if path.name == RANKS else path.stem
    return name, path


def prediction_file(path: Path) -> Path:
    """The file a SYSTEM names: itself, or a run directory's ranks.json (else its scores.npz/.npy)."""
    if not path.exists():
        raise T2IError(f"{path} does not exist (a SYSTEM is a run directory, a ranks.json or a .npy/.npz)")
    if path.is_file():
        return path
    for name in (RANKS, *SCORE_FILES):
        if (path / name).is_file():
            return path / name
    raise T2IError(f"{path} has no {RANKS} or scores file: run `t2iverw predict --run {path} --dataset DS` first")


def load_systems(dataset: str | Path, named: list[tuple[str, Path]],
                 direction: str = "t2i") -> tuple[GroundTruth, list[System]]:
    """Every (name, path) system scored against the test split, read once; refused if they ranked different sets."""
    if not named:
        raise T2IError("give at least one SYSTEM to compare")
    truth = ground_truth(dataset, direction)
    names = [n for n, _ in named]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise T2IError(f"two systems are named {dup!r}; name them: NAME=PATH")
    loaded, sets = [], []
    for name, path in named:
        file = prediction_file(path)
        if file.suffix == ".json":
            parsed, meta = read_ranks(file)
            ranks = resolve_ranks(parsed, str(file))
            sets.append((name, set(ranks), _listed(ranks, len(truth.gallery_ids))))
            loaded.append((name, file, {"ranks": {"meta": meta, "ranks": ranks}}))
        else:
            matrix, meta = load_scores(file)
            sets.append((name, None, None))
            loaded.append((name, file, {"scores": matrix}))
    _check_same_sets(sets, truth)
    systems = []
    for name, file, source in loaded:
        _, per_query, meta = score_against(truth, **source)
        systems.append(System(name, file, per_query, meta))
    return truth, systems


def _listed(ranks: dict, gallery_size: int) -> set | None:
    """The gallery full rankings cover (None for top-K lists, which list only part of it)."""
    if {len(v) if isinstance(v, list) else -1 for v in ranks.values()} != {gallery_size}:
        return None
    return {g for v in ranks.values() for g in v if isinstance(g, str)}


def _check_same_sets(sets: list[tuple[str, set | None, set | None]], truth: GroundTruth) -> None:
    """One error naming the ids two systems disagree on (a matrix covers the test split's ids)."""
    full_q, full_g = set(truth.query_ids), set(truth.gallery_ids)
    resolved = [(n, full_q if q is None else q, g if g is not None else (full_g if q is None else None))
                for n, q, g in sets]
    first, q0, g0 = resolved[0]
    for name, q, g in resolved[1:]:
        for what, a, b in (("queries", q0, q), ("gallery items", g0, g)):
            if a is None or b is None or a == b:
                continue
            only_a, only_b = sorted(a - b), sorted(b - a)
            parts = [f"{len(s)} only in {n} (e.g. {', '.join(map(repr, s[:3]))})" for n, s in
                     ((first, only_a), (name, only_b)) if s]
            raise T2IError(f"{first} and {name} ranked different {what}: {'; '.join(parts)}")


def unit_groups(truth: GroundTruth, unit: str) -> np.ndarray:
    """Group index of every query: its vehicle (identity) or itself (query)."""
    if unit not in UNITS:
        raise T2IError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if unit == "query":
        return np.arange(len(truth.query_ids))
    return np.unique(truth.query_labels, return_inverse=True)[1].reshape(-1)


def per_query_columns(per_query: PerQuery) -> dict[str, np.ndarray | None]:
    """Metric -> per-query value (None where a Rank-k is undecidable from top-K lists)."""
    return {f"R{k}": rank_k(per_query, k) for k in KS} | {"mAP": per_query.ap, "mINP": per_query.inp}


def compare(dataset: str | Path, specs: list[str], *, ci: float = 95.0, resamples: int = RESAMPLES,
            unit: str = "identity", seed: int = 0, direction: str = "t2i", progress: bool = False) -> dict:
    """{"systems": {name: metrics, "<m>_ci": [lo, hi]}, "pairs": [...], "unit", "resamples", "ci_level"}."""
    truth, systems = load_systems(dataset, [parse_spec(s) for s in specs], direction)
    return compare_systems(systems, unit_groups(truth, unit), ci=ci, resamples=resamples, unit=unit, seed=seed,
                           progress=progress)


def compare_systems(systems: list[System], groups: np.ndarray, *, ci: float = 95.0, resamples: int = RESAMPLES,
                    unit: str = "identity", seed: int = 0, progress: bool = False) -> dict:
    """The comparison of systems already scored on the same queries; `groups[q]` is query q's unit."""
    if not 0 < ci < 100:
        raise T2IError(f"--ci must be a confidence level between 0 and 100, got {ci}")
    if resamples < 1:
        raise T2IError(f"--resamples must be at least 1, got {resamples}")
    columns = [per_query_columns(s.per_query) for s in systems]
    metrics = [m for m in METRICS if all(c[m] is not None for c in columns)]
    values = np.stack([np.stack([c[m] for m in metrics], axis=1) for c in columns], axis=1)  # Q x S x M
    n_units = int(groups.max()) + 1
    sums = np.zeros((n_units, *values.shape[1:]))
    np.add.at(sums, groups, values)  # per-unit sums: G x S x M
    sizes = np.bincount(groups, minlength=n_units).astype(float)
    rng = np.random.default_rng(seed)
    boot = 100.0 * bootstrap_means(sums, sizes, resamples, rng, progress)  # B x S x M
    tail = (100.0 - ci) / 2
    lo, hi = np.percentile(boot, [tail, 100.0 - tail], axis=0)
    out_systems = {}
    for i, s in enumerate(systems):
        row = {m: v for m, v in summarize(s.per_query).items() if m in METRICS}
        row |= {f"{m}_ci": [float(lo[i, j]), float(hi[i, j])] for j, m in enumerate(metrics)}
        row["selected_on_test"] = bool(s.meta.get("selected_on_test"))
        out_systems[s.name] = row
    pairs = paired_tests(systems, sums, len(groups), boot, metrics, resamples, rng, (tail, 100.0 - tail))
    return {"systems": out_systems, "pairs": pairs, "unit": unit, "units": n_units,
            "queries": int(len(groups)), "resamples": resamples, "ci_level": ci,
            "test": "paired randomisation (sign-flip) test over units, Holm-corrected per metric"}


def bootstrap_means(sums: np.ndarray, sizes: np.ndarray, resamples: int, rng: np.random.Generator,
                    progress: bool = False) -> np.ndarray:
    """Means of every system x metric over `resamples` draws of units with replacement: B x S x M."""
    n = len(sizes)
    flat = sums.reshape(n, -1)
    out = []
    with tqdm(total=resamples, desc="bootstrap", unit="resample", disable=not progress, leave=False) as bar:
        for start in range(0, resamples, BATCH):
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(BATCH, resamples - start)).astype(float)
            out.append((counts @ flat) / (counts @ sizes)[:, None])
            bar.update(len(counts))
    return np.concatenate(out).reshape(resamples, *sums.shape[1:])


def sign_patterns(n_units: int, resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(±1 patterns over units, exact): all 2**n when that is at most `resamples`, else random ones."""
    if n_units <= 20 and 2**n_units <= resamples:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n_units))), True
    return rng.choice((1.0, -1.0), size=(resamples, n_units)), False


def paired_tests(systems: list[System], sums: np.ndarray, total: int, boot: np.ndarray, metrics: list[str],
                 resamples: int, rng: np.random.Generator, percentiles: tuple[float, float]) -> list[dict]:
    """Delta (a - b, percent), its paired-bootstrap interval and the randomisation p of every pair."""
    tested = [m for m in TESTED if m in metrics]
    pairs = list(itertools.combinations(range(len(systems)), 2))
    if not pairs or not tested:
        return []
    idx = [metrics.index(m) for m in tested]
    diffs = np.stack([sums[:, a, idx] - sums[:, b, idx] for a, b in pairs], axis=1).reshape(len(sums), -1)  # G x P*T
    patterns, exact = sign_patterns(len(sums), resamples, rng)
    observed = diffs.sum(axis=0) / total
    reach = np.zeros(diffs.shape[1])
    for start in range(0, len(patterns), BATCH):
        flipped = patterns[start : start + BATCH] @ diffs / total
        reach += (np.abs(flipped) >= np.abs(observed) - 1e-12).sum(axis=0)
    p = reach / len(patterns) if exact else (1.0 + reach) / (1.0 + len(patterns))
    out = []
    for k, (a, b) in enumerate(pairs):
        for t, m in enumerate(tested):
            j = k * len(tested) + t
            delta_boot = boot[:, a, idx[t]] - boot[:, b, idx[t]]
            lo, hi = np.percentile(delta_boot, percentiles)
            out.append({"a": systems[a].name, "b": systems[b].name, "metric": m, "delta": 100.0 * float(observed[j]),
                        "delta_ci": [float(lo), float(hi)], "p": float(min(p[j], 1.0)), "exact": exact})
    for m in tested:
        rows = [r for r in out if r["metric"] == m]
        for r, adjusted in zip(rows, holm([r["p"] for r in rows])):
            r["p_holm"] = adjusted
    return out


def holm(p: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p values, in the input order (controls the family-wise error rate)."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def significant_pairs(result: dict, alpha: float = 0.05) -> list[dict]:
    """The pairs whose Holm-corrected p is below `alpha`."""
    return [r for r in result["pairs"] if r["p_holm"] < alpha]


def format_comparison(result: dict) -> str:
    """The systems table with intervals, then one line per pair and metric."""
    names = list(result["systems"])
    width = max(8, *(len(n) + 2 for n in names))
    lines = [f"{result['queries']} queries, {result['units']} {result['unit']} units, {result['resamples']} resamples, "
             f"{result['ci_level']:g}% intervals",
             f"{'system':<{width}}" + "".join(f"{m:>22}" for m in METRICS)]
    for name, row in result["systems"].items():
        cells = []
        for m in METRICS:
            if row.get(m) is None:
                cells.append(f"{'n/a':>22}")
                continue
            lo, hi = row.get(f"{m}_ci", (None, None))
            text = f"{row[m]:.2f}" + (f" [{lo:.2f},{hi:.2f}]" if lo is not None else "")
            cells.append(f"{text:>22}")
        lines.append(f"{name:<{width}}" + "".join(cells) + ("  (selected on TEST)" if row["selected_on_test"] else ""))
    if result["pairs"]:
        lines.append("")
        labels = [f"{r['a']} - {r['b']}" for r in result["pairs"]]
        pad = max(14, *(len(label) + 2 for label in labels))
        lines.append(f"{'pair (a - b)':<{pad}}{'metric':<8}{'delta':>8}{'interval':>22}{'p':>10}{'p_holm':>10}")
        for label, r in zip(labels, result["pairs"]):
            star = " *" if r["p_holm"] < 0.05 else ""
            interval = f"[{r['delta_ci'][0]:+.2f}, {r['delta_ci'][1]:+.2f}]"
            lines.append(f"{label:<{pad}}{r['metric']:<8}{r['delta']:>+8.2f}{interval:>22}{r['p']:>10.4f}"
                         f"{r['p_holm']:>10.4f}{star}")
        lines.append(f"{result['test']}; * p_holm < 0.05")
    return "\n".join(lines)
