"""A searchable test gallery: encoded once, cached under the run, then one text encoding and one product per query.

The cache lives in `RUN/search-cache/<key>.npy` (float32 features, gallery in image-id
order) beside `<key>.json` (the ids, what made them, how often the gallery was
encoded). The key hashes the checkpoint's identity (`weights_identity`: each weight
file's name, size, mtime and the sha256 of its first and last MiB; a retrained or
edited checkpoint gets a new key) and the test split's `dataset_fingerprint`, so a
stale cache is never read: it is simply not found.

A zero-shot CLIP (`clip:PATH`) has no run to hold a cache: it is cached under
`--cache-dir` when one is given, otherwise kept in memory for the process.

A query's product reads a bf16 copy of the gallery and scores the rows near the top again in
float32 (`search.topk`): the ranking is the float32 product's, at about half the bytes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from t2iverw.checkpoints import WEIGHT_SUFFIXES
from t2iverw.errors import T2IError
from t2iverw.fingerprints import dataset_fingerprint
from t2iverw.search.topk import HalfReadTopK
from t2iverw.storage import atomic_path, write_json

CACHE = "search-cache"
WEIGHTS = "model.safetensors"
EDGE_BYTES = 1 << 20


@dataclass
class Hit:
    image_id: str
    vehicle_id: str
    score: float

    def to_dict(self) -> dict:
        return {"image_id": self.image_id, "vehicle_id": self.vehicle_id, "score": round(self.score, 6)}


@dataclass
class Searcher:
    """A model, its tokenizer and its encoded test gallery; `meta` says where they came from."""

    model: torch.nn.Module
    tokenizer: object
    image_ids: list[str]
    vehicle_ids: list[str]
    gallery: torch.Tensor  # (images, width) float32, L2-normalised
    meta: dict = field(default_factory=dict)
    device: str = "cpu"

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Normalised text features, padded to the batch's longest text rather than `text_length`.

        A query is a dozen tokens: padding it to 77 made ViT-B/16's text tower six times
        slower for the same features (the towers read padding through the causal or the
        attention mask only; tests check the ranking equals `predict`'s).
        """
        out = []
        for start in range(0, len(texts), batch_size):
            tok = self.tokenizer(texts[start : start + batch_size], padding="longest", truncation=True,
                                 max_length=self.model.cfg.text_length, return_tensors="pt").to(self.device)
            out.append(self.model.encode_text(tok["input_ids"], tok["attention_mask"]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.gallery.shape[1])

    def search(self, text: str, top: int = 10) -> list[Hit]:
        """The `top` gallery images closest to `text`, best first: one text encoding, one matrix product."""
        text = (text or "").strip()
        if not text:
            raise T2IError("the query is empty: describe the vehicle, e.g. \"a white SUV with a roof rack\"")
        return self.top_of(self.encode_texts([text])[0], top)

    @cached_property
    def ranker(self) -> HalfReadTopK:
        """The gallery's exact top-k with a bf16 first pass (search.topk): half the bytes a query reads."""
        return HalfReadTopK(self.gallery)

    def top_of(self, feature: torch.Tensor, top: int) -> list[Hit]:
        if top < 1:
            raise T2IError(f"--top must be at least 1, got {top}")
        scores, index = self.ranker.top(feature, min(top, len(self.image_ids)))
        return [Hit(self.image_ids[i], self.vehicle_ids[i], float(s)) for s, i in zip(scores.tolist(), index.tolist())]


def open_searcher(run: str | Path, dataset: str | Path, *, force: bool = False, device: str | None = None,
                  batch_size: int = 64, num_workers: int = 0, cache_dir: str | Path | None = None) -> Searcher:
    """The searcher of `run` (a run directory, or `clip:PATH` for a zero-shot CLIP) over `dataset`'s test gallery."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    run = str(run)
    if run.startswith("clip:"):
        model, tokenizer, source = _zero_shot(run[len("clip:"):], device)
        meta = {"model": "clip", "run": None, "checkpoint": source}
        weights = sorted(p for p in Path(source).iterdir() if p.suffix in WEIGHT_SUFFIXES)
        cache_root = Path(cache_dir) if cache_dir else None
    else:
        model, tokenizer, meta = _trained(Path(run), dataset, force, device)
        weights = [Path(run) / WEIGHTS]
        cache_root = Path(cache_dir) if cache_dir else Path(run) / CACHE
    gallery_fp = dataset_fingerprint(dataset, "test")
    key = hashlib.sha256(json.dumps([weights_identity(weights), gallery_fp, model.cfg.image_size]).encode()
                         ).hexdigest()[:16]
    meta |= {"dataset": str(dataset), "gallery_fingerprint": gallery_fp, "cache_key": key}
    ids, labels, gallery, cache = _gallery(model, dataset, device, batch_size, num_workers, cache_root, key, meta)
    return Searcher(model, tokenizer, ids, labels, gallery, meta | cache, device)


def weights_identity(files: list[Path]) -> list[list]:
    """Per weight file: name, size, mtime (ns) and the sha256 of its first and last MiB."""
    out = []
    for path in files:
        stat = path.stat()
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            digest.update(fh.read(EDGE_BYTES))
            fh.seek(max(0, stat.st_size - EDGE_BYTES))
            digest.update(fh.read())
        out.append([path.name, stat.st_size, stat.st_mtime_ns, digest.hexdigest()[:16]])
    return out


def _trained(run: Path, dataset, force: bool, device: str) -> tuple[torch.nn.Module, object, dict]:
    from t2iverw.training.predict import load_run

    if not run.is_dir():
        raise T2IError(f"unknown run {str(run)!r}: no such run directory (`t2iverw train --out RUN` makes one; "
                       f"a zero-shot CLIP is `clip:PATH`)")
    if not (run / WEIGHTS).is_file():
        raise T2IError(f"run {str(run)!r} has no checkpoint ({WEIGHTS}); let `t2iverw train` finish first")
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    meta = {"run": str(run), "checkpoint": str(run / WEIGHTS)}
    trained_on = summary.get("dataset_fingerprint")
    if trained_on is not None:
        here = dataset_fingerprint(dataset)
        if here != trained_on:
            message = (f"dataset {str(dataset)!r} (fingerprint {here}) is not the one run {str(run)!r} was trained "
                       f"for ({trained_on})")
            if not force:
                raise T2IError(message + "; pass --force to search it anyway")
            meta["warning"] = message + " (searched anyway: --force)"
    model, tokenizer = load_run(run, device)
    return model, tokenizer, {"model": model.cfg.model} | meta


def _zero_shot(path: str, device: str):
    """Zero-shot CLIP from a saved CLIPModel directory, with clip.yaml's settings (as `predict --model clip`)."""
    from t2iverw.training.predict import load_zero_shot

    if not path or not Path(path).is_dir():
        raise T2IError(f"clip:{path} is not a directory holding a saved CLIPModel (save_pretrained)")
    model, tokenizer = load_zero_shot("clip", {"clip": path}, device)
    return model, tokenizer, str(Path(path).resolve())


def _gallery(model, dataset, device, batch_size, num_workers, root: Path | None, key: str, meta: dict):
    """(ids, vehicle ids, features, cache facts) from the cache, or encoded now and cached."""
    from t2iverw.training.data import load_split
    from t2iverw.training.retrieval import encode_gallery

    npy, info_path = (root / f"{key}.npy", root / f"{key}.json") if root else (None, None)
    if npy is not None and npy.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        gallery = torch.from_numpy(np.load(npy))
        if gallery.shape[0] == len(info["image_ids"]):
            return info["image_ids"], info["vehicle_ids"], gallery, {
                "cache": "loaded", "cache_file": str(npy), "gallery_encodings": info["encodings"],
                "gallery_encoded_at": info["encoded_at"]}
    rows = load_split(dataset, "test", ["image", "image_id", "vehicle_id"])
    start = time.perf_counter()
    ids, labels, gallery = encode_gallery(model, rows, batch_size, device, num_workers, leave=True)
    seconds = time.perf_counter() - start
    facts = {"cache": "built" if root else "memory", "cache_file": str(npy) if root else None,
             "gallery_encodings": 1, "gallery_encoded_at": time.time(), "encode_seconds": round(seconds, 3),
             "images_per_second": round(len(ids) / seconds, 1) if seconds else None}
    if root is not None:
        previous = json.loads(info_path.read_text())["encodings"] if info_path.is_file() else 0
        facts["gallery_encodings"] = previous + 1
        with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, gallery.numpy().astype(np.float32))
        write_json(info_path, {"image_ids": ids, "vehicle_ids": labels, "encodings": facts["gallery_encodings"],
                               "encoded_at": facts["gallery_encoded_at"],
                               **{k: meta[k] for k in ("model", "run", "checkpoint", "dataset", "gallery_fingerprint")}})
    return ids, labels, gallery, facts


def split_queries(dataset, split: str = "test"):
    """A split's captions as `training.data.Queries` (ids, texts, vehicle ids), in query-id order."""
    from t2iverw.training.data import load_split, queries

    return queries(load_split(dataset, split, ["vehicle_id", "caption_id", "caption", "captions"]))
