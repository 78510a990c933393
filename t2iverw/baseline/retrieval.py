"""Encode captions and images with a trained model and score every caption against every image.

Order is the contract `t2iverw eval` relies on: queries are the rows that have a
caption, in row order; the gallery is every row, in row order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from t2iverw.baseline.data import EvalImages, tokenize


@torch.no_grad()
def score_matrix(model, rows, tokenizer, image_size: int, text_length: int, batch_size: int, device, num_workers: int = 0):
    """(scores, query_rows): cosine similarities (queries x gallery) and the row index of each query."""
    model.eval()
    query_rows = [i for i, c in enumerate(rows["caption"]) if c]
    captions = [rows["caption"][i] for i in query_rows]
    texts = []
    for start in tqdm(range(0, len(captions), batch_size), desc="encode text", unit="batch", leave=False):
        tok = tokenize(tokenizer, captions[start : start + batch_size], text_length).to(device)
        texts.append(model.encode_text(tok["input_ids"], tok["attention_mask"]).cpu())
    images = []
    loader = DataLoader(EvalImages(rows, image_size), batch_size=batch_size, num_workers=num_workers)
    for pixels in tqdm(loader, desc="encode images", unit="batch", leave=False):
        images.append(model.encode_image(pixels.to(device)).cpu())
    scores = torch.cat(texts) @ torch.cat(images).t()
    return scores.numpy(), query_rows


def ranking(scores: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Gallery indices per query, best first (stable, so ties keep row order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order if top_k is None else order[:, :top_k]

