"""Rank the test gallery for every test caption with a trained run; write what `t2iverw eval` reads.

Order (also of --scores): the evaluator's documented order, so `t2iverw eval --scores`
reads the matrix as written: queries are the captioned test rows sorted by caption_id,
the gallery is every test row sorted by image_id (annotations/schema.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from t2iverw.baseline.config import load_config
from t2iverw.baseline.data import load_export
from t2iverw.baseline.engine import WEIGHTS
from t2iverw.baseline.model import PFCVR, build_model
from t2iverw.baseline.retrieval import ranking, score_matrix
from t2iverw.errors import T2IError
from t2iverw.storage import atomic_path, write_json


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[PFCVR, object]:
    """(model, tokenizer) of a finished run directory, built from its saved config and weights."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    run = Path(run)
    for name in ("config.yaml", "run.json", "clip/config.json", WEIGHTS):
        if not (run / name).exists():
            raise T2IError(f"{run} is not a finished training run (no {name}); run `t2iverw train` first")
    cfg = load_config(run / "config.yaml")
    clip = CLIPModel(CLIPConfig.from_pretrained(run / "clip"))
    tokenizer = AutoTokenizer.from_pretrained(run / "clip")
    classes = json.loads((run / "run.json").read_text())["classes"]
    model = build_model(clip, tokenizer, cfg, len(classes))
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    return model.to(device).eval(), tokenizer


def predict(
    run: str | Path,
    dataset: str | Path,
    out_ranks: str | Path,
    scores_path: str | Path | None = None,
    top_k: int | None = None,
    batch_size: int = 128,
) -> Path:
    """Write ranks.json {caption_id: [image_id, ... best first]} for the test split (and the score matrix)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_run(run, device)
    test = load_export(str(dataset))["test"]
    cfg = model.cfg
    scores, query_rows = score_matrix(model, test, tokenizer, cfg.image_size, cfg.text_length, batch_size, device)
    query_ids = [test["caption_id"][q] for q in query_rows]
    q_order = sorted(range(len(query_ids)), key=query_ids.__getitem__)
    g_order = sorted(range(len(test)), key=test["image_id"].__getitem__)
    scores = scores[np.ix_(q_order, g_order)]
    query_ids, gallery_ids = [query_ids[i] for i in q_order], [test["image_id"][j] for j in g_order]
    ranks = {q: [gallery_ids[j] for j in row] for q, row in zip(query_ids, ranking(scores, top_k))}
    write_json(out_ranks, ranks)
    if scores_path is not None:
        with atomic_path(scores_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, scores.astype(np.float32))
    return Path(out_ranks)
