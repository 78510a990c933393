"""Encode captions and images with a trained model, then score and rank the gallery in blocks.

Order is the evaluator's (annotations/schema.md, "Evaluation ids"): queries are every
caption of the captioned rows, sorted by query id (`t2iverw.schema.query_id`); the
gallery is every row, sorted by image_id. Scores are produced a block of queries at a
time, so the whole (queries x gallery) matrix never has to sit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from t2iverw.training.data import EvalImages, queries, tokenize


@dataclass
class Encoded:
    """Normalised features in evaluation order, with the ids and vehicle ids of both sides."""

    query_ids: list[str]
    query_labels: list[str]
    queries: torch.Tensor  # (queries, width) float32, CPU
    gallery_ids: list[str]
    gallery_labels: list[str]
    gallery: torch.Tensor  # (gallery, width) float32, CPU


@torch.no_grad()
def encode(model, rows, tokenizer, batch_size: int, device, num_workers: int = 0) -> Encoded:
    """Features of every query caption and every gallery image of `rows`."""
    model.eval()
    cfg = model.cfg
    q = queries(rows)
    texts = []
    for start in tqdm(range(0, len(q.texts), batch_size), desc="encode text", unit="batch", leave=False):
        tok = tokenize(tokenizer, q.texts[start : start + batch_size], cfg.text_length).to(device)
        texts.append(model.encode_text(tok["input_ids"], tok["attention_mask"]).cpu())
    gallery_ids, gallery_labels, images = encode_gallery(model, rows, batch_size, device, num_workers)
    width = images.shape[1]
    return Encoded(q.ids, q.labels, torch.cat(texts) if texts else torch.zeros(0, width),
                   gallery_ids, gallery_labels, images)


@torch.no_grad()
def encode_gallery(model, rows, batch_size: int, device, num_workers: int = 0,
                   leave: bool = False) -> tuple[list[str], list[str], torch.Tensor]:
    """(image ids, vehicle ids, features) of every image of `rows`, sorted by image id."""
    model.eval()
    image_ids, labels = rows["image_id"], rows["vehicle_id"]
    order = sorted(range(len(image_ids)), key=image_ids.__getitem__)
    loader = DataLoader(EvalImages(rows, model.cfg.image_size, order, model.image_mean, model.image_std), batch_size=batch_size, num_workers=num_workers)
    images = [model.encode_image(pixels.to(device)).cpu()
              for pixels in tqdm(loader, desc="encode images", unit="batch", leave=leave)]
    return [image_ids[i] for i in order], [labels[i] for i in order], torch.cat(images)


@torch.no_grad()
def score_blocks(enc: Encoded, block: int = 1024, device="cpu") -> Iterator[tuple[int, np.ndarray]]:
    """(first query index, float32 scores of up to `block` queries x the whole gallery), in query order."""
    gallery = enc.gallery.to(device)
    for start in range(0, len(enc.query_ids), block):
        yield start, (enc.queries[start : start + block].to(device) @ gallery.t()).float().cpu().numpy()


def score_matrix(enc: Encoded) -> np.ndarray:
    """The whole (queries x gallery) matrix: for validation-sized splits only."""
    return np.concatenate([s for _, s in score_blocks(enc)]) if enc.query_ids else np.zeros((0, len(enc.gallery_ids)))


def ranking(scores: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Gallery indices per query, best first; ties keep gallery (id) order, as the evaluator breaks them."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order if not top_k else order[:, :top_k]
