"""Zero-shot CLIP: its features are CLIP's projected, normalised tower outputs, and its configs match FIDELITY.md."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from t2iverw.errors import T2IError
from t2iverw.models import get
from t2iverw.models.clip import ZeroShotCLIP
from t2iverw.training.config import CONFIGS, load_config

_spec = importlib.util.spec_from_file_location("fidelity_tables", Path(__file__).with_name("test_fidelity.py"))
fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fidelity)  # its FIDELITY.md table reader


def tiny(clip_dir, image_size: int = 32) -> tuple[ZeroShotCLIP, object]:
    cfg = load_config(None, {"model": "clip", "name": "clip", "clip": str(clip_dir), "image_size": image_size, "text_length": 16})
    return ZeroShotCLIP.build(cfg, 0, clip_dir)


def test_registered_and_not_trainable():
    assert get("clip") is ZeroShotCLIP and ZeroShotCLIP.trainable is False


def test_features_are_the_projected_cls_and_end_of_text_states(tiny_clip_dir):
    model, tokenizer = tiny(tiny_clip_dir)
    clip = model.clip
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32)
    tok = tokenizer(["a red sedan", "a white SUV with a roof rack"], padding="max_length", max_length=16,
                    return_tensors="pt")
    with torch.no_grad():
        # by hand, from the layers, as OpenAI's encode_image / encode_text (clip/model.py:235-238, 343-356)
        vision = clip.vision_model
        hidden = vision.encoder(inputs_embeds=vision.pre_layrnorm(vision.embeddings(pixels))).last_hidden_state
        image = clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
        text_hidden = clip.text_model(input_ids=tok["input_ids"]).last_hidden_state  # final LayerNorm included
        eot = tok["input_ids"].argmax(dim=-1)  # the end-of-text id is the vocabulary's largest
        text = clip.text_projection(text_hidden[torch.arange(2), eot])
        got_image = model.encode_image(pixels)
        got_text = model.encode_text(tok["input_ids"], tok["attention_mask"])
    assert torch.allclose(got_image, F.normalize(image, dim=-1), atol=1e-5)
    assert torch.allclose(got_text, F.normalize(text, dim=-1), atol=1e-5)
    assert torch.allclose(got_image.norm(dim=-1), torch.ones(3))


def test_native_size_keeps_the_checkpoints_position_embeddings(tiny_clip_dir):
    from transformers import CLIPModel

    saved = CLIPModel.from_pretrained(str(tiny_clip_dir)).vision_model.embeddings.position_embedding.weight
    native, _ = tiny(tiny_clip_dir, 32)
    assert torch.equal(native.clip.vision_model.embeddings.position_embedding.weight, saved)
    larger, _ = tiny(tiny_clip_dir, 64)  # another input size interpolates them
    assert larger.clip.vision_model.embeddings.position_embedding.weight.shape[0] == (64 // 8) ** 2 + 1


def test_forward_refuses(tiny_clip_dir):
    model, _ = tiny(tiny_clip_dir)
    with pytest.raises(T2IError, match="not trained"):
        model({})


@pytest.mark.parametrize("name", ["clip", "clip-tiny"])
def test_configs_are_the_fidelity_tables(name):
    shipped = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert shipped["model"] == "clip"
    rows = [r for r in fidelity.table_rows("Zero-shot CLIP") if r["key"] != "—"]
    assert rows, "no keyed row in the Zero-shot CLIP table"
    for r in rows:
        key = r["key"].strip("`")
        if r[name] != "—":
            assert shipped[key] == fidelity.value(r[name]), (name, key)


def test_predict_model_clip_writes_ranks_that_eval_accepts(tiny_clip_dir, export_dir, tmp_path):
    from click.testing import CliRunner

    from t2iverw.cli import cli
    from t2iverw.search.index import split_queries

    out = tmp_path / "ranks.json"
    # the tiny CLIP was saved at 32 px; clip.yaml's 224 px input interpolates its position embeddings
    result = CliRunner().invoke(cli, ["predict", "--model", "clip", "--clip", str(tiny_clip_dir), "--dataset",
                                      str(export_dir), "--out", str(out), "--top-k", "0", "--device", "cpu",
                                      "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    ranks = json.loads(out.read_text())
    assert ranks["meta"]["model"] == "clip" and ranks["meta"]["selection"] == "zero-shot"
    queries = split_queries(export_dir)
    assert sorted(ranks["ranks"]) == sorted(queries.ids)
    gallery = {i for r in ranks["ranks"].values() for i in r}
    assert all(sorted(r) == sorted(gallery) for r in ranks["ranks"].values())  # every query ranks the whole gallery
    scored = CliRunner().invoke(cli, ["eval", "--pred", str(out), "--dataset", str(export_dir), "--json"])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads(scored.stdout)
    assert 0 <= metrics["R1"] <= 100 and 0 < metrics["mAP"] <= 100
