"""Evaluation: exact Rank-k / mAP / mINP of text-to-image retrieval, independent of any model.

`evaluate(scores, query_labels, gallery_labels)` is the numpy-level entry point for
training code; `evaluate_predictions(dataset, ranks=... | scores=...)` adds the test
split's ground truth and strict input checks (what `t2iverw eval` runs).
"""

from t2iverw.evaluation.judge import evaluate_predictions
from t2iverw.evaluation.metrics import evaluate

__all__ = ["evaluate", "evaluate_predictions"]
