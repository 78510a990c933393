"""What BMRIA hides: caption tokens for MLM, patch cells for MIM. Both run per sample in the data loader."""

from __future__ import annotations

import torch


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, tokenizer, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style MLM masking of a *copy* of `ids` (80% mask token, 10% random, 10% kept).

    Returns (masked ids, labels with -100 where nothing is predicted). The input tensor is
    never modified: SDM and ID use it unmasked (IRRA's in-place bug, which the released
    augmentation dataset repeats).
    """
    ids = ids.clone()
    special = torch.tensor(tokenizer.all_special_ids)
    candidates = attention.bool() & ~torch.isin(ids, special)
    chosen = candidates & (torch.rand(ids.shape) < ratio)
    if candidates.any() and not chosen.any():  # always predict at least one token
        chosen[candidates.nonzero()[torch.randint(int(candidates.sum()), (1,))].squeeze(0).unbind()] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape)
    ids[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_ids = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[random_ids] = torch.randint(int(special.min()), (int(random_ids.sum()),))  # CLIP's special tokens come last
    return ids, labels


def mim_cells(seed: torch.Tensor | None, cells: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(cells,) bool: which patches MIM hides, exactly round(ratio * cells) of them.

    With a `seed` (a flat bool grid: the release's `mask`, or the union of the part
    grids) its cells are hidden first: random cells are added until the count is reached,
    or random seed cells dropped when the seed is larger, as the released code does.
    Without one the cells are drawn uniformly (`mim_mask: random`).
    """
    n = max(1, min(cells - 1, round(ratio * cells)))
    seed = torch.zeros(cells, dtype=torch.bool) if seed is None else seed.reshape(-1).bool()
    priority = torch.rand(cells, generator=generator) + seed.float()  # seed cells sort above all others
    hidden = torch.zeros(cells, dtype=torch.bool)
    hidden[priority.argsort(descending=True)[:n]] = True
    return hidden
