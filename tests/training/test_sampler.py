"""`sampler: identity` (IVT's RandomIdentitySamplerCUHK, datasets/sampler.py:71-130): P identities x K pairs a batch."""

from collections import Counter

import pytest
import torch

from t2iverw.errors import T2IError
from t2iverw.training.sampler import IdentitySampler

# identities 0..4 with 5, 4, 1, 6, 2 pairs: groups of 2 are 2 + 2 + 1 (drawn with replacement) + 3 + 1 = 9
LABELS = [0] * 5 + [1] * 4 + [2] * 1 + [3] * 6 + [4] * 2


def test_every_batch_is_p_identities_of_k_pairs_each():
    sampler = IdentitySampler(LABELS, batch_size=6, num_instance=2)
    assert len(sampler) == 9 // 3 * 6  # 3 batches of 3 identities x 2
    torch.manual_seed(0)
    for _ in range(20):  # epochs
        order = list(sampler)
        assert len(order) == len(sampler)
        for start in range(0, len(order), 6):
            batch = [LABELS[i] for i in order[start : start + 6]]
            assert sorted(Counter(batch).values()) == [2, 2, 2], batch


def test_a_group_holds_distinct_pairs_where_the_identity_has_enough():
    torch.manual_seed(1)
    order = list(IdentitySampler(LABELS, batch_size=6, num_instance=2))
    for start in range(0, len(order), 2):
        a, b = order[start : start + 2]
        assert LABELS[a] == LABELS[b]
        if LABELS[a] != 2:  # identity 2 has one pair: its group repeats it (with replacement, as theirs)
            assert a != b


def test_the_order_follows_torchs_seed():
    sampler = IdentitySampler(LABELS, batch_size=6, num_instance=2)
    torch.manual_seed(5)
    first = list(sampler)
    torch.manual_seed(5)
    assert list(sampler) == first


def test_impossible_batches_are_refused():
    with pytest.raises(T2IError, match="multiple of num_instance"):
        IdentitySampler(LABELS, batch_size=7, num_instance=2)
    with pytest.raises(T2IError, match="at least 7 identities"):
        IdentitySampler(LABELS, batch_size=28, num_instance=4)
