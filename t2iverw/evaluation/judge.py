"""Predictions + ground truth -> metrics: the one entry point the CLI, the demo and users share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2iverw.errors import T2IError
from t2iverw.evaluation.inputs import GroundTruth, check_shape, ground_truth, ranking_metrics, read_ids, reorder
from t2iverw.evaluation.metrics import PerQuery, score_metrics, summarize
from t2iverw.evaluation.predictions import load_scores, read_ranks, resolve_ranks, unwrap
from t2iverw.evaluation.report import bootstrap_ci


@dataclass(frozen=True)
class Result:
    metrics: dict  # R1, R5, R10, mAP, mINP (percent), at_k, queries, gallery, direction[, ci, ci_level, selected_on_test]
    truth: GroundTruth
    per_query: PerQuery
    meta: dict  # what the prediction file says about the model (`meta` of ranks.json / scores.npz), or {}

    @property
    def selected_on_test(self) -> bool:
        """The model was chosen by its test-split metrics, so these numbers are optimistic."""
        return bool(self.meta.get("selected_on_test"))


def evaluate_predictions(
    dataset: str | Path,
    *,
    ranks: str | Path | dict | list | None = None,
    scores: str | Path | np.ndarray | None = None,  # or a torch tensor
    direction: str = "t2i",
    query_ids: str | Path | None = None,
    gallery_ids: str | Path | None = None,
    ci: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Result:
    """Score `ranks` or a queries x gallery `scores` matrix on the test split of `dataset`.

    `ranks`: a ranks.json path or its parsed content, in any form of
    `t2iverw.evaluation.predictions` ({query_id: [gallery ids best first]}, a list of
    rankings in `query_ids` order, either one wrapped with `meta`). `scores`: an array,
    a tensor, or a .npy/.npz path. `query_ids` / `gallery_ids` are files giving the
    matrix's row / column order when it is not the default (ids sorted), the query of
    each ranking of a list, and the gallery order that integer entries index. `ci`
    (e.g. 95) adds seeded bootstrap intervals.
    """
    if (ranks is None) == (scores is None):
        raise T2IError("give exactly one of --pred (ranks.json) and --scores (.npy/.npz)")
    truth, per_query, meta = score_against(ground_truth(dataset, direction), ranks=ranks, scores=scores,
                                           query_ids=query_ids, gallery_ids=gallery_ids, progress=progress)
    metrics = summarize(per_query) | {"direction": direction}
    if meta.get("selected_on_test"):
        metrics["selected_on_test"] = True
    if ci is not None:
        if not 0 < ci < 100:
            raise T2IError(f"--ci must be a confidence level between 0 and 100, got {ci}")
        metrics |= {"ci": bootstrap_ci(per_query, ci, seed=seed), "ci_level": ci}
    return Result(metrics, truth, per_query, meta)


def score_against(truth: GroundTruth, *, ranks: str | Path | dict | list | None = None,
                  scores: str | Path | np.ndarray | None = None, query_ids: str | Path | None = None,
                  gallery_ids: str | Path | None = None, progress: bool = False) -> tuple[GroundTruth, PerQuery, dict]:
    """(the ground truth in the prediction's order, per-query results, meta) of one prediction.

    Takes a ground truth already read, so `t2iverw compare` reads the test split once for
    all its systems.
    """
    queries, gallery = query_ids and read_ids(query_ids), gallery_ids and read_ids(gallery_ids)
    if ranks is not None:
        name = str(ranks) if isinstance(ranks, (str, Path)) else "ranks"
        parsed, meta = read_ranks(ranks) if isinstance(ranks, (str, Path)) else unwrap(ranks, name)
        return truth, ranking_metrics(resolve_ranks(parsed, name, queries, gallery), truth, name), meta
    truth = reorder(truth, queries, gallery)
    from_file = isinstance(scores, (str, Path))
    name = str(scores) if from_file else "scores"
    matrix, meta = load_scores(scores) if from_file else (scores, {})
    check_shape(matrix, truth, name)
    per_query = score_metrics(matrix, truth.query_labels, truth.gallery_labels, query_ids=truth.query_ids,
                              progress=progress)
    return truth, per_query, meta
