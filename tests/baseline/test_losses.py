"""Loss terms and MLM masking on plain tensors: the properties the formulas promise."""

from __future__ import annotations

import torch

from t2iverw.baseline import losses
from t2iverw.baseline.data import mask_tokens, pool_grid


def test_sdm_is_small_for_aligned_features_and_large_for_shuffled():
    torch.manual_seed(0)
    feats, labels = torch.randn(8, 16), torch.arange(8)
    aligned = losses.sdm(feats, feats, labels, scale=50.0)
    shuffled = losses.sdm(feats, feats[torch.randperm(8)], labels, scale=50.0)
    assert torch.isfinite(aligned) and aligned < 0.1 < shuffled


def test_sdm_treats_same_identity_pairs_as_matches():
    feats = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    swapped = feats[[1, 0, 2, 3]]  # rows 0 and 1 swap: wrong unless they share an identity
    assert losses.sdm(feats, swapped, torch.tensor([0, 0, 1, 2]), 50.0) < losses.sdm(feats, swapped, torch.tensor([0, 1, 2, 3]), 50.0)


def test_part_itc_ignores_images_without_the_part():
    torch.manual_seed(0)
    visual, textual = torch.randn(4, 6, 16), torch.randn(4, 6, 16)
    present = torch.ones(4, 6, dtype=torch.bool)
    present[2, 3] = False  # image 2 has no mirrors
    base = losses.part_itc(visual, textual, present, 20.0)
    visual2, textual2 = visual.clone(), textual.clone()
    visual2[2, 3], textual2[2, 3] = torch.randn(16) * 5, torch.randn(16) * 5
    assert torch.isfinite(base)
    assert torch.allclose(base, losses.part_itc(visual2, textual2, present, 20.0))
    visual3 = visual.clone()
    visual3[1, 3] = torch.randn(16) * 5  # a present one does count
    assert not torch.allclose(base, losses.part_itc(visual3, textual, present, 20.0))


def test_part_itc_without_any_part_is_zero_but_connected():
    visual = torch.randn(3, 6, 8, requires_grad=True)
    loss = losses.part_itc(visual, torch.randn(3, 6, 8), torch.zeros(3, 6, dtype=torch.bool), 20.0)
    loss.backward()
    assert loss.item() == 0.0 and visual.grad is not None and not visual.grad.any()


def test_mim_counts_only_masked_patches():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    masked = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
    base = losses.mim(pred, target, masked)
    pred2 = pred.clone()
    pred2[masked == 0] = 100.0
    assert torch.isfinite(base) and torch.allclose(base, losses.mim(pred2, target, masked))


def test_mlm_masking_copies_the_tokens(clip_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(clip_tokenizer_dir)
    tok.add_special_tokens({"mask_token": "<|mask|>"})
    enc = tok(["a red sedan with black wheels and a silver roof rail " * 3], padding="max_length", max_length=40,
              truncation=True, return_tensors="pt")
    ids, attention = enc["input_ids"][0], enc["attention_mask"][0]
    before = ids.clone()
    torch.manual_seed(0)
    masked, labels = mask_tokens(ids, attention, tok, ratio=0.5)
    assert torch.equal(ids, before)  # the SDM/ID tokens are untouched
    chosen = labels != -100
    assert chosen.any() and torch.equal(labels[chosen], before[chosen])
    assert torch.equal(masked[~chosen], before[~chosen])
    assert (masked[chosen] == tok.mask_token_id).any()
    assert not chosen[torch.isin(before, torch.tensor(tok.all_special_ids))].any()  # never SOT/EOT/padding


def test_pool_grid_marks_every_touched_cell():
    mask = torch.zeros(6, 24, 24, dtype=torch.bool)
    mask[0, 0, 0] = True  # one 24-grid cell in the top-left
    mask[1, 23, 12] = True
    pooled = pool_grid(mask, 8)
    assert pooled.shape == (6, 8, 8)
    assert pooled[0, 0, 0] and pooled[0].sum() == 1
    assert pooled[1, 7, 4] and pooled[1].sum() == 1
    assert not pooled[2:].any()
