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


def test_phrase_and_word_levels_pool_the_chunks_of_every_sentence():
    """get_phrase_level_txt (processor.py:59-76) worked by hand on a two-sentence caption: sentence 1
    gives its longest segment and the rest, sentence 2 (one segment) gives one chunk; the draw is
    uniform over the pooled three, so "big wheels" comes 1/3 of the time (1/2 if a sentence were
    drawn first)."""
    caption = "A white SUV, with black roof, and a rack. Big wheels."
    pool = {"with black roof", "a white suv, and a rack", "big wheels"}
    rng = random.Random(0)
    draws = [phrase_and_word(caption, rng) for _ in range(3000)]
    assert {p for p, _ in draws} == pool and {w for _, w in draws} == pool
    share = sum(p == "big wheels" for p, _ in draws) / len(draws)
    assert 0.29 < share < 0.38, share
    assert phrase_and_word("Red car.", rng) == ("red car", "red car")
    assert phrase_and_word("A car.", rng) == ("a car.", "a car.")  # no chunk over 5 characters: the caption


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


def _tiny_backbones(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTModel

    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                             image_size=32, patch_size=8), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "car", "white", "suv"]
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(tmp_path / "bert")
    bert = BertModel(BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=20), add_pooling_layer=False)
    bert.save_pretrained(tmp_path / "bert")
    return vit, bert


def test_vit_and_bert_weights_are_copied_as_load_param_hybrid(tmp_path):
    vit, bert = _tiny_backbones(tmp_path)
    cfg = IVTConfig(dim=16, depth=2, heads=2, mlp_ratio=2.0, patch=8, patch_stride=6, image_size=44,
                    text_length=8, vit=str(tmp_path / "vit"), bert=str(tmp_path / "bert"))
    model, tok = IVT.build(cfg, 3, tmp_path)
    assert cfg.vocab_size == 10 and tok("a red car")["input_ids"] == [2, 5, 6, 7, 3]
    e = vit.embeddings
    torch.testing.assert_close(model.cls_token, e.cls_token)
    torch.testing.assert_close(model.patch_embed.weight, e.patch_embeddings.projection.weight)
    # The 4x4 ViT grid resized to (44-8)//6+1 = 7 per side; the values are checked in the next test.
    assert model.pos_embed.shape == (1, 50, 16)
    torch.testing.assert_close(model.pos_embed[:, 0], e.position_embeddings[:, 0])
    for ours, layer in zip(model.blocks, vit.layers):
        a = layer.attention
        torch.testing.assert_close(ours.attn.in_proj_weight[:16], a.q_proj.weight)
        torch.testing.assert_close(ours.attn.in_proj_weight[16:32], a.k_proj.weight)
        torch.testing.assert_close(ours.attn.in_proj_bias[32:], a.v_proj.bias)
        torch.testing.assert_close(ours.attn.out_proj.weight, a.o_proj.weight)
        torch.testing.assert_close(ours.norm1.weight, layer.layernorm_before.weight)
        torch.testing.assert_close(ours.norm2.bias, layer.layernorm_after.bias)
        torch.testing.assert_close(ours.mlp_vis.fc1.weight, layer.mlp.fc1.weight)
        torch.testing.assert_close(ours.mlp_vis.fc2.bias, layer.mlp.fc2.bias)
    torch.testing.assert_close(model.norm.weight, vit.layernorm.weight)
    b = bert.embeddings
    torch.testing.assert_close(model.embeddings.word_embeddings.weight, b.word_embeddings.weight)
    torch.testing.assert_close(model.embeddings.position_embeddings.weight, b.position_embeddings.weight[:8])
    torch.testing.assert_close(model.embeddings.token_type_embeddings.weight, b.token_type_embeddings.weight)
    torch.testing.assert_close(model.embeddings.LayerNorm.bias, b.LayerNorm.bias)
    for ours, layer in zip(model.blocks, bert.encoder.layer):
        torch.testing.assert_close(ours.mlp_txt.fc1.weight, layer.intermediate.dense.weight)
        torch.testing.assert_close(ours.mlp_txt.fc2.bias, layer.output.dense.bias)


def test_pos_embed_resize_is_bilinear():
    from t2iverw.models.ivt_weights import resize_pos_embed

    # A 2x2 grid [[0, 1], [2, 3]] resized to 4x4 (align_corners=False): first row 0, .25, .75, 1.
    pos = torch.tensor([9.0, 0, 1, 2, 3]).view(1, 5, 1)
    out = resize_pos_embed(pos, 4)
    assert out.shape == (1, 17, 1) and out[0, 0, 0] == 9
    torch.testing.assert_close(out[0, 1:5, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_a_dimension_mismatch_is_refused(tmp_path):
    import pytest

    from t2iverw.errors import T2IError

    _tiny_backbones(tmp_path)
    cfg = IVTConfig(dim=16, depth=2, heads=2, mlp_ratio=4.0, patch=8, image_size=32, vit=str(tmp_path / "vit"))
    with pytest.raises(T2IError, match="intermediate_size=32"):
        IVT.build(cfg, 3, tmp_path)
