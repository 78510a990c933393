"""t2iverw: build, load and benchmark the T2I-VeRW text-to-image vehicle retrieval dataset."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["evaluate", "evaluate_predictions"]


def __getattr__(name: str):
    # `t2iverw.evaluate(...)` without importing numpy/pyarrow on every `t2iverw --help`.
    if name in __all__:
        from t2iverw import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 't2iverw' has no attribute {name!r}")
