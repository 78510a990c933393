"""Our counting evaluator vs. a straightforward full-argsort evaluator: speed and peak extra memory.

The reference is what the field's evaluators do (torchreid / fast-reid / IRRA style):
argsort the whole queries x gallery matrix, gather the match matrix, cumsum it. Both
run on the same random float32 matrix in this process and must give the same numbers.
Timing runs untraced; peak extra memory is measured in a second, traced run
(tracemalloc sees numpy's buffers; the input matrix itself is not counted).

    .venv/bin/python benchmark/bench_eval.py                       # 4,403^2 and 2,000 x 138,517
    .venv/bin/python benchmark/bench_eval.py --queries 10000 --gallery 138517   # full VERI-Wild large
    (the reference then needs ~25 GB; add --skip-reference-large to time ours alone)

Both evaluators are numpy on the CPU: evaluation is memory-bound counting, and a
score matrix from a GPU model is evaluated after `.cpu()`.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from t2iverw.evaluation import evaluate

PAPER_SIZE = (4403, 4403, 545)  # T2I-VeRW test: captions x images, identities


def full_argsort_metrics(scores: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> dict:
    """The textbook evaluator: full stable argsort, match matrix, CMC and AP from cumulative sums."""
    order = np.argsort(-scores, axis=1, kind="stable")
    matches = gallery_labels[order] == query_labels[:, None]
    first = matches.argmax(axis=1) + 1
    hits = matches.cumsum(axis=1)
    positions = np.arange(1, scores.shape[1] + 1)
    n_pos = hits[:, -1]
    ap = (hits / positions * matches).sum(axis=1) / n_pos
    last = scores.shape[1] - matches[:, ::-1].argmax(axis=1)
    out = {f"R{k}": 100.0 * float(np.mean(first <= k)) for k in (1, 5, 10)}
    return out | {"mAP": 100.0 * float(ap.mean()), "mINP": 100.0 * float(np.mean(n_pos / last))}


def problem(queries: int, gallery: int, ids: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gallery_labels = rng.integers(0, ids, gallery)
    query_labels = rng.choice(gallery_labels, queries)
    return rng.random((queries, gallery), dtype=np.float32), query_labels, gallery_labels


def measure(fn, *args) -> tuple[dict, float, float]:
    """(result, seconds untraced, peak extra MiB traced)."""
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def compare(queries: int, gallery: int, ids: int, reference: bool) -> None:
    scores, q, g = problem(queries, gallery, ids)
    print(f"\n{queries:,} queries x {gallery:,} gallery, {ids:,} identities "
          f"(matrix {scores.nbytes / 2**20:,.0f} MiB float32)")
    ours, t_ours, m_ours = measure(lambda *a: evaluate(*a), scores, q, g)
    print(f"  counting (ours)     {t_ours:8.2f} s   peak extra {m_ours:9,.1f} MiB")
    if not reference:
        return
    ref, t_ref, m_ref = measure(full_argsort_metrics, scores, q, g)
    print(f"  full argsort (ref)  {t_ref:8.2f} s   peak extra {m_ref:9,.1f} MiB")
    same = all(abs(ours[k] - ref[k]) < 1e-9 for k in ref)
    print(f"  speed-up x{t_ref / t_ours:.1f}, memory ratio x{m_ref / max(m_ours, 1e-3):.0f}, "
          f"metrics identical: {same}")
    if not same:
        raise SystemExit(f"metrics differ: ours {ours} vs reference {ref}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=2000, help="queries of the large run")
    parser.add_argument("--gallery", type=int, default=138517, help="gallery of the large run (VERI-Wild large test)")
    parser.add_argument("--ids", type=int, default=10000, help="identities of the large run")
    parser.add_argument("--skip-reference-large", action="store_true", help="time only ours at the large size")
    args = parser.parse_args()
    compare(*PAPER_SIZE, reference=True)
    compare(args.queries, args.gallery, args.ids, reference=not args.skip_reference_large)


if __name__ == "__main__":
    main()
