"""The T2I-VeRW paper's published comparison rows (Tables III and IV), shipped as package data."""

from __future__ import annotations

import importlib.resources

import yaml

PUBLISHED_NOTE = ("Published, not reproduced here: the released PFCVR code selects its epoch on the test split; "
                  "the paper does not say how the other rows were selected")


def published_tables() -> list[dict]:
    """[{"dataset", "table", "note"?, "rows": [{"method", "venue", "R1", "R5", "R10", "mAP"}]}], in paper order."""
    text = (importlib.resources.files("t2iverw.leaderboard") / "published.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["tables"]
