"""The counting evaluator against hand-computed cases and an independent full-argsort implementation."""

from __future__ import annotations

import numpy as np
import pytest

from t2iverw.errors import T2IError
from t2iverw.evaluation import evaluate
from t2iverw.evaluation.metrics import list_metrics, score_metrics, summarize


def slow_metrics(scores: np.ndarray, query_labels, gallery_labels) -> dict:
    """Textbook evaluation: stable full argsort of each row, then CMC / AP / INP from the match vector."""
    gallery_labels = np.asarray(gallery_labels)
    first, aps, inps = [], [], []
    for row, label in zip(scores, query_labels):
        matches = gallery_labels[np.argsort(-row.astype(np.float64), kind="stable")] == label
        ranks = np.flatnonzero(matches) + 1
        first.append(ranks[0])
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
    first = np.array(first)
    out = {f"R{k}": 100 * np.mean(first <= k) for k in (1, 5, 10)}
    return out | {"mAP": 100 * np.mean(aps), "mINP": 100 * np.mean(inps)}


def test_hand_computed_case():
    # order by score: #3 (b) .95, #0 (a) .9, #1 (b) .8, #2 (a) .8 (tie: #1 is earlier), #4 (a) .1
    m = evaluate(np.array([[0.9, 0.8, 0.8, 0.95, 0.1]]), ["a"], ["a", "b", "a", "b", "a"])
    assert (m["R1"], m["R5"], m["R10"]) == (0.0, 100.0, 100.0)
    assert m["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 4 + 3 / 5) / 3)
    assert m["mINP"] == pytest.approx(100 * 3 / 5)
    assert (m["at_k"], m["queries"], m["gallery"]) == (None, 1, 5)


def test_ties_are_broken_by_gallery_order():
    flat = np.ones((2, 4))
    m = evaluate(flat, ["a", "b"], ["b", "a", "b", "a"])
    # query a: positives at ranks 2, 4; query b: ranks 1, 3
    assert m["R1"] == 50.0
    assert m["mAP"] == pytest.approx(100 * ((1 / 2 + 2 / 4) / 2 + (1 / 1 + 2 / 3) / 2) / 2)
    assert m["mINP"] == pytest.approx(100 * (2 / 4 + 2 / 3) / 2)


@pytest.mark.parametrize("integer_scores", [True, False])
def test_matches_full_argsort_on_random_data(integer_scores):
    rng = np.random.default_rng(1 if integer_scores else 2)
    for trial in range(40):
        q, g = rng.integers(1, 40), rng.integers(2, 80)
        gallery = rng.integers(0, 6, g)
        query = rng.choice(gallery, q)
        scores = rng.integers(-3, 4, (q, g)) if integer_scores else rng.standard_normal((q, g)).astype(np.float32)
        got = evaluate(scores, query, gallery, chunk_size=int(rng.integers(1, 9)))
        want = slow_metrics(scores, query, gallery)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (trial, key)


def test_torch_tensor_and_memmap_give_the_numpy_numbers(tmp_path):
    import torch

    rng = np.random.default_rng(3)
    scores = rng.standard_normal((30, 50)).astype(np.float32)
    gallery = rng.integers(0, 7, 50)
    query = rng.choice(gallery, 30)
    want = evaluate(scores, query, gallery)
    bf16 = torch.from_numpy(scores).to(torch.bfloat16)  # no numpy dtype: read as float32, which holds it exactly
    assert evaluate(bf16, query, gallery) == evaluate(bf16.float().numpy(), query, gallery)
    np.save(tmp_path / "s.npy", scores)
    assert evaluate(np.load(tmp_path / "s.npy", mmap_mode="r"), query, gallery, chunk_size=7) == want
    assert evaluate(torch.from_numpy(scores), query, gallery) == want


def test_labels_may_be_ints_or_strings():
    scores = np.array([[0.1, 0.9, 0.5]])
    assert evaluate(scores, [7], [3, 7, 7]) == evaluate(scores, ["7"], ["3", "7", "7"])


def test_top_k_lists():
    # q0: 3 positives, list of 2 holds one at position 2; q1: 1 positive listed first
    pq = list_metrics([np.array([2]), np.array([1])], n_pos=np.array([3, 1]), depth=np.array([2, 2]), gallery=10)
    m = summarize(pq)
    assert m["at_k"] == 2
    assert m["R1"] == 50.0 and m["R5"] == 100.0  # decidable: both first positives were listed
    assert m["mAP"] == pytest.approx(100 * ((1 / 2) / 3 + 1) / 2)
    assert m["mINP"] == pytest.approx(100 * (0 + 1) / 2)  # q0's last positive was never retrieved
    missed = summarize(list_metrics([np.array([], int), np.array([1])], np.array([1, 1]), np.array([3, 3]), 10))
    assert missed["R1"] == 50.0 and missed["R5"] is None  # q0 may have its positive at rank 4 or 5


@pytest.mark.parametrize(
    ("scores", "query", "gallery", "message"),
    [
        (np.array([[np.nan, 1.0]]), ["a"], ["a", "b"], "NaN"),
        (np.ones((2, 2)), ["a"], ["a", "b"], "shape"),
        (np.ones((1, 2)), ["c"], ["a", "b"], "no positive"),
        (np.array([["x", "y"]]), ["a"], ["a", "b"], "real-valued"),
    ],
)
def test_bad_matrices_are_user_errors(scores, query, gallery, message):
    with pytest.raises(T2IError, match=message):
        score_metrics(scores, query, gallery)
