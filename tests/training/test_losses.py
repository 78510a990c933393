"""Loss terms, masking and pooling on plain tensors, against hand computations."""

from __future__ import annotations

import math

import torch

from t2iverw.models import losses
from t2iverw.training.data import pool_grid
from t2iverw.training.masking import mask_tokens, mim_cells
from t2iverw.models.plfa import LearnedPool, mean_pool


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


def test_within_image_part_loss_equals_the_hand_computation():
    """2 images, 3 parts. Image 0 shows all three, visual = query features = e1, e2, e3 (cosines = I).
    Image 1 shows parts 0 and 1, with its visual features swapped (cosines [[0, 1], [1, 0]]);
    its part 2 is absent and must not count, whatever its features are."""
    s = 10.0
    e = torch.eye(3)
    visual = torch.stack([e, torch.stack([e[1], e[0], 5 * torch.ones(3)])])
    textual = torch.stack([e, torch.stack([e[0], e[1], -torch.ones(3)])])
    present = torch.tensor([[True, True, True], [True, True, False]])

    def bce(logit: float, target: int) -> float:  # binary cross-entropy with logits, one entry
        return math.log1p(math.exp(-logit)) if target else math.log1p(math.exp(logit))

    image0 = (3 * bce(s, 1) + 6 * bce(0, 0)) / 9  # diagonal: cosine 1 vs target 1; off-diagonal: 0 vs 0
    image1 = (2 * bce(0, 1) + 2 * bce(s, 0)) / 4  # diagonal: cosine 0 vs 1; off-diagonal: 1 vs 0
    expected = (image0 + image1) / 2  # both directions are equal here (symmetric matrices); / batch size 2
    got = losses.part_within_image(visual, textual, present, s)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)


def test_within_image_part_loss_never_compares_images():
    """The released loss has no cross-image term: moving image 1's features leaves image 0's term alone."""
    torch.manual_seed(0)
    visual, textual = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    present = torch.ones(2, 6, dtype=torch.bool)
    alone = losses.part_within_image(visual[:1], textual[:1], present[:1], 14.3)
    both = losses.part_within_image(visual, textual, present, 14.3)
    image1 = losses.part_within_image(visual[1:], textual[1:], present[1:], 14.3)
    assert torch.allclose(both, (alone + image1) / 2)


def test_batch_part_loss_ignores_images_without_the_part():
    torch.manual_seed(0)
    visual, textual = torch.randn(4, 6, 16), torch.randn(4, 6, 16)
    present = torch.ones(4, 6, dtype=torch.bool)
    present[2, 3] = False  # image 2 has no mirrors
    base = losses.part_batch(visual, textual, present, 20.0)
    visual2, textual2 = visual.clone(), textual.clone()
    visual2[2, 3], textual2[2, 3] = torch.randn(16) * 5, torch.randn(16) * 5
    assert torch.isfinite(base)
    assert torch.allclose(base, losses.part_batch(visual2, textual2, present, 20.0))
    visual3 = visual.clone()
    visual3[1, 3] = torch.randn(16) * 5  # a present one does count
    assert not torch.allclose(base, losses.part_batch(visual3, textual, present, 20.0))


def test_part_losses_without_any_part_are_zero_but_connected():
    for loss in (losses.part_batch, losses.part_within_image):
        visual = torch.randn(3, 6, 8, requires_grad=True)
        value = loss(visual, torch.randn(3, 6, 8), torch.zeros(3, 6, dtype=torch.bool), 20.0)
        value.backward()
        assert value.item() == 0.0 and visual.grad is not None and not visual.grad.any()


def test_learned_pool_has_576_weights_a_gradient_and_is_a_weighted_sum():
    torch.manual_seed(0)
    pool = LearnedPool(576)
    assert pool.weight.numel() == 576 and pool.bias.numel() == 1
    tokens, grid = torch.randn(1, 576, 4), torch.rand(1, 2, 576) < 0.3
    out = pool(tokens, grid)
    for p in range(2):  # sum over the part's patches of weight x token, plus the bias
        expected = sum(pool.weight[n] * tokens[0, n] for n in range(576) if grid[0, p, n]) + pool.bias
        assert torch.allclose(out[0, p], expected, atol=1e-5)
    out.sum().backward()
    assert pool.weight.grad is not None and pool.weight.grad.abs().sum() > 0
    assert (pool.weight.grad[~grid[0].any(0)] == 0).all()  # a patch under no part gets no gradient


def test_mean_pool_averages_the_part_patches():
    tokens = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]]])
    grid = torch.tensor([[[True, True, False], [False, False, False]]])
    assert torch.equal(mean_pool(tokens, grid), torch.tensor([[[2.0, 1.0], [0.0, 0.0]]]))


def test_release_mim_mask_hides_432_cells_and_the_seed_first():
    g = torch.Generator().manual_seed(0)
    seed = torch.zeros(576, dtype=torch.bool)
    seed[:100] = True  # smaller than 432: all of it is hidden, 332 more at random
    hidden = mim_cells(seed, 576, 0.75, g)
    assert int(hidden.sum()) == 432 and hidden[:100].all()
    big = torch.zeros(576, dtype=torch.bool)
    big[:500] = True  # larger than 432: a subset of it, nothing outside
    hidden = mim_cells(big, 576, 0.75, g)
    assert int(hidden.sum()) == 432 and not hidden[500:].any()
    draws = [mim_cells(big, 576, 0.75, g) for _ in range(2)]
    assert not torch.equal(*draws)  # the subset is random


def test_random_mim_mask_hides_the_share_uniformly():
    g = torch.Generator().manual_seed(0)
    counts = torch.stack([mim_cells(None, 576, 0.25, g) for _ in range(200)]).float()
    assert (counts.sum(1) == 144).all()
    assert 0.1 < counts.mean(0).min() and counts.mean(0).max() < 0.4  # every cell ~25% of the time (5 sd)


def test_mim_loss_counts_only_hidden_patches_and_uses_raw_pixels():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [9.0, 9.0]]])
    target = torch.tensor([[[3.0, 5.0], [0.0, 2.0], [0.0, 0.0]]])
    hidden = torch.tensor([[True, True, False]])
    # patch 0: ((1-3)^2 + (1-5)^2) / 2 = 10; patch 1: (0 + 4) / 2 = 2; patch 2 is visible
    assert losses.mim(pred, target, hidden).item() == (10 + 2) / 2


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
