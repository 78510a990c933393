"""Rank the test gallery for every test caption with a trained run; write what `t2iverw eval` reads.

ranks.json is `{"meta": {...}, "ranks": {query_id: [image ids best first]}}`, compact JSON
streamed a query at a time, the best `top_k` images per query (0: the whole gallery).
`meta` says which run, config and model-selection rule produced it, so `eval` can warn
when the model was selected on the test split. Scores (`--scores`) follow the
evaluator's order (annotations/schema.md, "Evaluation ids": queries by query id, gallery
by image id); a .npz also carries the meta as a 0-d string array.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from t2iverw import models
from t2iverw.fingerprints import dataset_fingerprint
from t2iverw.models.base import RetrievalModel
from t2iverw.training.config import load_config, resolve_config
from t2iverw.training.engine import BACKBONE, EVAL_COLUMNS, SUMMARY, TEST_WARNING, WEIGHTS
from t2iverw.training.data import load_split
from t2iverw.training.retrieval import encode, ranking, score_blocks
from t2iverw.errors import T2IError
from t2iverw.storage import atomic_path

DEFAULT_TOP_K = 100


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[RetrievalModel, object]:
    """(model, tokenizer) of a finished run directory, built from its saved config and weights."""
    from safetensors.torch import load_file

    run = Path(run)
    for name in ("config.yaml", "run.json", BACKBONE, WEIGHTS):
        if not (run / name).exists():
            raise T2IError(f"{run} is not a finished training run (no {name}); run `t2iverw train` first")
    cfg = load_config(run / "config.yaml")
    classes = json.loads((run / "run.json").read_text())["classes"]
    model, tokenizer = models.get(cfg.model).from_run(cfg, len(classes), run / BACKBONE)
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    return model.to(device).eval(), tokenizer


def load_zero_shot(name: str, overrides: dict | None = None, device: str | torch.device = "cpu",
                   config: str | Path | None = None) -> tuple[RetrievalModel, object]:
    """(model, tokenizer) of a model that ranks without training, from its shipped config + `overrides`."""
    model_class = models.get(name)
    if model_class.trainable:
        raise T2IError(f"model {name!r} must be trained first (`t2iverw train --model {name}`), then "
                       f"`t2iverw predict --run RUN`")
    cfg = load_config(resolve_config(config, name), {**(overrides or {}), "model": name})
    with tempfile.TemporaryDirectory() as workdir:
        model_class.prepare(cfg, Path(workdir))
        model, tokenizer = model_class.build(cfg, 0, Path(workdir))
    return model.to(device).eval(), tokenizer


def run_meta(run: str | Path | None, cfg) -> dict:
    """Provenance of a run's predictions: the model, the run, its config and how its epoch was selected."""
    summary_path = Path(run) / SUMMARY if run is not None else None
    summary = json.loads(summary_path.read_text()) if summary_path and summary_path.exists() else {}
    meta = {"model": cfg.model, "run": None if run is None else str(run), "config": cfg.name,
            "selection": cfg.selection, "selected_on_test": cfg.selection == "test",
            "selected_epoch": summary.get("selected_epoch"), "trained_on": summary.get("dataset_fingerprint")}
    if not models.get(cfg.model).trainable:
        meta |= {"selection": "zero-shot", "selected_on_test": False}
    if meta["selected_on_test"]:
        meta["warning"] = TEST_WARNING
    return meta


def predict(
    run: str | Path | None,
    dataset: str | Path,
    out_ranks: str | Path,
    scores_path: str | Path | None = None,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = 128,
    device: str | None = None,
    num_workers: int = 0,
    cache_dir: str | None = None,
    zero_shot: tuple[str, dict, str | None] | None = None,
) -> Path:
    """Write ranks.json (and the score matrix) for the test split of `dataset`; returns the ranks path.

    `run` is a training run; with `run=None`, `zero_shot` = (model name, config overrides,
    --config or None) names a model that ranks without training (`predict --model clip --clip PATH`).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if scores_path is not None and Path(scores_path).suffix not in (".npy", ".npz"):
        raise T2IError(f"--scores must end with .npy or .npz, got {scores_path}")
    model, tokenizer = load_run(run, device) if run is not None else load_zero_shot(
        zero_shot[0], zero_shot[1], device, zero_shot[2])
    enc = encode(model, load_split(dataset, "test", EVAL_COLUMNS, cache_dir), tokenizer, batch_size, device, num_workers)
    meta = run_meta(run, model.cfg) | {"dataset_fingerprint": dataset_fingerprint(dataset),
                                      "top_k": top_k or None, "queries": len(enc.query_ids),
                                      "gallery": len(enc.gallery_ids)}
    shape = (len(enc.query_ids), len(enc.gallery_ids))
    with ExitStack() as stack:
        ranks_tmp = stack.enter_context(atomic_path(out_ranks))
        writer = stack.enter_context(RanksWriter(ranks_tmp, meta, enc.gallery_ids))
        matrix = stack.enter_context(ScoresWriter(scores_path, shape, meta)) if scores_path else None
        blocks = tqdm(score_blocks(enc, device=device), total=-(-shape[0] // 1024), desc="rank", unit="block", leave=False)
        for start, block in blocks:
            if matrix is not None:
                matrix.write(start, block)
            writer.write(enc.query_ids[start : start + len(block)], ranking(block, top_k))
    return Path(out_ranks)


class RanksWriter:
    """Streams `{"meta": ..., "ranks": {query: [image ids]}}` as compact JSON, a block of queries at a time."""

    def __init__(self, path: Path, meta: dict, gallery_ids: list[str]):
        self.path, self.meta = path, meta
        self.encoded = [json.dumps(g) for g in gallery_ids]
        self.first = True

    def __enter__(self) -> RanksWriter:
        self.fh = open(self.path, "w", encoding="utf-8")
        self.fh.write('{"meta":' + json.dumps(self.meta, separators=(",", ":")) + ',"ranks":{')
        return self

    def write(self, query_ids: list[str], rows: np.ndarray) -> None:
        for qid, row in zip(query_ids, rows):
            sep = "" if self.first else ","
            self.fh.write(f"{sep}{json.dumps(qid)}:[{','.join(self.encoded[j] for j in row)}]")
            self.first = False

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.fh.write("}}\n")
        self.fh.close()


class ScoresWriter:
    """The float32 score matrix written block by block into a memory-mapped .npy in a scratch
    folder beside `path`, moved into place on success; a .npz is packed from it with `meta`."""

    def __init__(self, path: str | Path, shape: tuple[int, int], meta: dict):
        self.path, self.shape, self.meta = Path(path), shape, meta

    def __enter__(self) -> ScoresWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self.matrix = np.lib.format.open_memmap(self.scratch / "scores.npy", mode="w+", dtype=np.float32,
                                                shape=self.shape)
        return self

    def write(self, start: int, block: np.ndarray) -> None:
        self.matrix[start : start + len(block)] = block

    def __exit__(self, kind, *_) -> None:
        try:
            if kind is None:
                self.matrix.flush()
                if self.path.suffix == ".npz":
                    with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
                        np.savez(fh, scores=self.matrix, meta=np.array(json.dumps(self.meta)))
                else:
                    os.replace(self.scratch / "scores.npy", self.path)
        finally:
            del self.matrix
            shutil.rmtree(self.scratch, ignore_errors=True)
