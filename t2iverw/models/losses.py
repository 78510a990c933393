"""PFCVR's loss terms, one small function each, formulas as in IRRA / the released PFCVR code.

All similarity-based terms use cosine similarity times a fixed scale (1 / temperature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def sdm(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Similarity distribution matching: KL(p || q) of the scaled-cosine softmax p against the
    identity-match distribution q, image-to-text plus text-to-image."""
    match = (labels[:, None] == labels[None, :]).float()
    q = match / match.sum(dim=1, keepdim=True)
    i2t = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()

    def kl(logits: torch.Tensor) -> torch.Tensor:
        return (F.softmax(logits, dim=1) * (F.log_softmax(logits, dim=1) - torch.log(q + EPS))).sum(1).mean()

    return kl(i2t) + kl(i2t.t())


def identity(image_logits: torch.Tensor, text_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ID loss: cross-entropy of one shared classifier, averaged over the two modalities."""
    return (F.cross_entropy(image_logits, labels) + F.cross_entropy(text_logits, labels)) / 2


def part_within_image(visual: torch.Tensor, textual: torch.Tensor, present: torch.Tensor, scale: float) -> torch.Tensor:
    """The released part loss: per image, the P x P scaled cosines between its present parts'
    visual and query features, binary cross-entropy against the identity averaged over the
    P x P entries (the released code averages this with the transposed matrix's, the same
    entries); summed over images and divided by the batch size.

    The negatives of a part are the *other parts of the same image*. An image showing no
    part adds zero (the released code would crash on it).
    """
    logits = scale * F.normalize(visual, dim=-1) @ F.normalize(textual, dim=-1).transpose(1, 2)  # (B, parts, parts)
    target = torch.eye(logits.shape[1], device=logits.device).expand_as(logits)
    pairs = (present[:, :, None] & present[:, None, :]).to(logits.dtype)  # both parts shown by the image
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    per_image = (bce * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1)
    return per_image.sum() / visual.shape[0]


def part_batch(visual: torch.Tensor, textual: torch.Tensor, present: torch.Tensor, scale: float) -> torch.Tensor:
    """The paper's reading: per part, InfoNCE across the images of the batch that show it.

    An image without a part is left out of that part's contrast entirely (neither anchor
    nor negative); parts that no image in the batch shows add nothing.
    """
    terms = []
    for p in range(visual.shape[1]):
        rows = present[:, p]
        if rows.sum() == 0:
            continue
        logits = scale * F.normalize(visual[rows, p], dim=-1) @ F.normalize(textual[rows, p], dim=-1).t()
        target = torch.arange(logits.shape[0], device=logits.device)
        terms.append((F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2)
    if not terms:  # keep the graph connected so every rank runs the same backward
        return (visual.sum() + textual.sum()) * 0.0
    return torch.stack(terms).mean()


def mlm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-token cross-entropy; labels are -100 where the token was not masked."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def mim(pred: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Pixel regression as in the released code: per-patch MSE against the (CLIP-normalised)
    pixels, with no per-patch normalisation, averaged over the hidden patches only."""
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    hidden = hidden.float()
    return (per_patch * hidden).sum() / hidden.sum().clamp(min=1)
