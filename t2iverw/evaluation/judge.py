"""Predictions + ground truth -> metrics: the one entry point the CLI, the demo and users share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2iverw.errors import T2IError
from t2iverw.evaluation.inputs import (GroundTruth, check_shape, ground_truth, load_scores, ranking_metrics,
                                       read_ids, read_ranks, reorder)
from t2iverw.evaluation.metrics import PerQuery, score_metrics, summarize
from t2iverw.evaluation.report import bootstrap_ci


@dataclass(frozen=True)
class Result:
    metrics: dict  # R1, R5, R10, mAP, mINP (percent), at_k, queries, gallery, direction[, ci, ci_level]
    truth: GroundTruth
    per_query: PerQuery


def evaluate_predictions(
    dataset: str | Path,
    *,
    ranks: str | Path | dict | None = None,
    scores: str | Path | np.ndarray | None = None,  # or a torch tensor
    direction: str = "t2i",
    query_ids: str | Path | None = None,
    gallery_ids: str | Path | None = None,
    ci: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Result:
    """Score `ranks` ({query_id: [gallery ids best first]}, a dict or a ranks.json path) or a
    queries x gallery `scores` matrix (array, tensor, or .npy/.npz path) on the test split of `dataset`.

    `query_ids` / `gallery_ids` are files giving the score matrix's row / column order
    when it is not the default (ids sorted). `ci` (e.g. 95) adds seeded bootstrap intervals.
    """
    if (ranks is None) == (scores is None):
        raise T2IError("give exactly one of --pred (ranks.json) and --scores (.npy/.npz)")
    truth = ground_truth(dataset, direction)
    if ranks is not None:
        if query_ids is not None or gallery_ids is not None:
            raise T2IError("--query-ids/--gallery-ids order a score matrix; a ranks.json names its ids itself")
        name = "ranks" if isinstance(ranks, dict) else str(ranks)
        per_query = ranking_metrics(ranks if isinstance(ranks, dict) else read_ranks(ranks), truth, name)
    else:
        truth = reorder(truth, query_ids and read_ids(query_ids), gallery_ids and read_ids(gallery_ids))
        from_file = isinstance(scores, (str, Path))
        name = str(scores) if from_file else "scores"
        matrix = load_scores(scores) if from_file else scores
        check_shape(matrix, truth, name)
        per_query = score_metrics(matrix, truth.query_labels, truth.gallery_labels, query_ids=truth.query_ids,
                                  progress=progress)
    metrics = summarize(per_query) | {"direction": direction}
    if ci is not None:
        if not 0 < ci < 100:
            raise T2IError(f"--ci must be a confidence level between 0 and 100, got {ci}")
        metrics |= {"ci": bootstrap_ci(per_query, ci, seed=seed), "ci_level": ci}
    return Result(metrics, truth, per_query)
