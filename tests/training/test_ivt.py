"""IVT's pieces against hand computations on tiny tensors."""

import math
import random

import torch

from t2iverw.models.ivt import IVT, IVTConfig, cmpm, drop_tokens, phrase_and_word


def test_cmpm_equals_hand_computation():
    # Rows 0 and 1 share a label, so their target is 1/sqrt(2) (L2, cmps_loss.py:48), not 1/2 (L1).
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    text = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    total = 0.0
    for a, b in ((image, text), (text, image)):
        for i in range(3):
            logits = [sum(x * y for x, y in zip(a[i].tolist(), (b[j] / b[j].norm()).tolist())) for j in range(3)]
            z = math.log(sum(math.exp(v) for v in logits))
            p = [math.exp(v - z) for v in logits]
            same = [labels[j] == labels[i] for j in range(3)]
            q = [1.0 / math.sqrt(sum(same)) if s else 0.0 for s in same]
            total += sum(p[j] * ((logits[j] - z) - math.log(q[j] + 1e-8)) for j in range(3)) / 3
    assert abs(cmpm(image, text, labels).item() - total) < 1e-4


def test_phrase_and_word_levels_come_from_comma_segments():
    phrase, word = phrase_and_word("a white suv, with black roof, and a rack.", random.Random(0))
    assert word in ("a white suv", "with black roof", "and a rack")
    assert phrase in ("with black roof", "a white suv, and a rack")


def test_bmm_drops_the_same_positions_batch_wide_counting_cls_in_n():
    # N = 10 with CLS, so k ranges over 0..int(0.2*10) = 0..2 (N-1 would give 0..1).
    random.seed(3)
    x = torch.arange(10.0).view(1, 10, 1).repeat(3, 1, 1) + torch.tensor([0.0, 100.0, 200.0]).view(3, 1, 1)
    mask = torch.arange(10).repeat(3, 1)
    sizes = set()
    for _ in range(60):
        y, m = drop_tokens(x, mask, 0.2)
        pos = (y[0, :, 0]).long()
        assert pos[0] == 0 and len(set(pos.tolist())) == len(pos)
        assert torch.equal(y[1, :, 0] - 100, y[0, :, 0]) and torch.equal(y[2, :, 0] - 200, y[0, :, 0])
        assert torch.equal(m, pos.repeat(3, 1))
        sizes.add(10 - y.shape[1])
    assert sizes == {0, 1, 2}


def test_gradients_reach_both_mlps_and_the_shared_attention():
    cfg = IVTConfig(dim=16, depth=1, heads=2, image_size=40, text_length=8, vocab_size=50)
    model = IVT(cfg)
    batch = {"pixel_values": torch.randn(4, 3, 40, 40), "input_ids": torch.randint(0, 50, (4, 8)),
             "attention_mask": torch.ones(4, 8, dtype=torch.long), "labels": torch.tensor([0, 0, 1, 1])}
    model(batch)["cmpm"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"patch_embed", "cls_token", "pos_embed", "type_embed", "embeddings", "blocks", "norm"}
    block = {n.split(".", 2)[2].split(".")[0] for n, _ in model.named_parameters() if n.startswith("blocks.")}
    assert block == {"norm1", "attn", "norm2", "mlp_vis", "mlp_txt"}


def test_run_files_round_trip_gives_the_same_text_features(tmp_path):
    cfg = IVTConfig(dim=16, depth=1, heads=2, image_size=40, text_length=8)
    model, tok = IVT.build(cfg, 3, tmp_path)
    model.save_run_files(tok, tmp_path / "backbone")
    again, tok2 = IVT.from_run(cfg, 3, tmp_path / "backbone")
    again.load_state_dict(model.state_dict())
    enc = tok2(["a red car"], padding="max_length", max_length=8, truncation=True, return_tensors="pt")
    model.eval(), again.eval()
    a = model.encode_text(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(a, again.encode_text(enc["input_ids"], enc["attention_mask"]))
    assert torch.allclose(a.norm(dim=-1), torch.ones(1))
