"""The part-level correspondence model: its losses against hand computations, where gradients go, and a tiny run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from t2iverw.cli import cli
from t2iverw.errors import T2IError
from t2iverw.models.cpsl import CPSL, CPSLConfig, cmr, slot_mask
from t2iverw.training.config import CONFIGS, load_config
from t2iverw.training.data import load_split

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-c", "from t2iverw.cli import main; main()"]


def unit(x):
    n = math.sqrt(sum(a * a for a in x))
    return [a / n for a in x]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_cmr_equals_hand_computation_on_two_images_and_three_slots():
    # part vectors [person][slot]; slot 1 of the two people points apart (negative commonality, clamped to 0)
    v = [[[1.0, 0.0], [0.6, 0.8], [1.0, 1.0]], [[0.8, 0.6], [-1.0, 0.2], [1.0, 0.9]]]
    t = [[[0.9, 0.1], [0.0, 1.0], [1.0, -1.0]], [[1.0, 0.0], [-0.2, -1.0], [0.7, 0.7]]]
    margin = 0.3
    vn = [[unit(p) for p in person] for person in v]
    tn = [[unit(p) for p in person] for person in t]
    i2t = t2i = 0.0
    for k in range(3):
        s = [[dot(vn[i][k], tn[j][k]) for j in range(2)] for i in range(2)]  # image i, caption j
        for a in range(2):
            n = 1 - a
            common = min(1.0, max(0.0, (dot(vn[a][k], vn[n][k]) + dot(tn[a][k], tn[n][k])) / 2))
            m = margin * (1 - common)
            i2t += max(0.0, m - s[a][a] + s[a][n])  # image anchor a: its caption vs the other's
            t2i += max(0.0, m - s[a][a] + s[n][a])  # caption anchor a: its image vs the other's
    expected = i2t / 6 + t2i / 6
    got = cmr(torch.tensor(v), torch.tensor(t), torch.tensor([0, 1]), margin).item()
    assert expected > 0.05 and abs(got - expected) < 1e-5
    # a part both people share gets a smaller margin: with commonality ignored (margin fixed) the loss is larger
    fixed = sum(max(0.0, margin - dot(vn[a][k], tn[a][k]) + dot(vn[a][k], tn[1 - a][k])) / 6
                + max(0.0, margin - dot(vn[a][k], tn[a][k]) + dot(vn[1 - a][k], tn[a][k])) / 6
                for k in range(3) for a in range(2))
    assert fixed > got + 0.01


def test_cmr_with_one_identity_is_zero_and_connected():
    parts = torch.randn(3, 2, 4, requires_grad=True)
    loss = cmr(parts, parts * 2, torch.tensor([5, 5, 5]), 0.2)
    loss.backward()
    assert loss.item() == 0 and parts.grad is not None


def test_slot_mask_equals_hand_computation():
    attention = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]])
    grid = torch.tensor([[[[True, True], [False, False]], [[False, False], [False, False]]]])  # part 1 absent
    # slot 0 on part 0 (patches 0, 1): mass 0.1 + 0.2; part 1 is not shown; slot 2 is free
    assert abs(slot_mask(attention, grid).item() - (-math.log(0.3))) < 1e-6


def tiny(**keys) -> tuple[CPSL, CPSLConfig]:
    from transformers import CLIPConfig, CLIPModel

    values = yaml.safe_load((CONFIGS / "cpsl-tiny.yaml").read_text())
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**values["random_clip"]))
    cfg = CPSLConfig(image_size=64, text_length=12, num_slots=8, slot_heads=4, slot_layers=1, slot_ffn=32, **keys)
    return CPSL(clip, cfg, num_classes=4), cfg


def batch(b: int = 4) -> dict:
    torch.manual_seed(1)
    mask = torch.ones(b, 12, dtype=torch.long)
    mask[:, 8:] = 0
    grid = torch.zeros(b, 6, 8, 8, dtype=torch.bool)
    for p in range(6):
        grid[:, p, p : p + 2, 1:5] = True
    return {"pixel_values": torch.randn(b, 3, 64, 64), "input_ids": torch.randint(1, 400, (b, 12)),
            "attention_mask": mask, "labels": torch.tensor([0, 0, 1, 2])[:b], "part_grid": grid}


def reached(model, loss) -> set[str]:
    """Parameters (by name) that `loss` gives a non-zero gradient."""
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_gradients_reach_exactly_the_switched_on_modules():
    model, cfg = tiny()
    assert CPSL.batch_needs(cfg) == frozenset()
    out = model(batch())
    assert set(out) == {"sdm", "id", "cmr"}  # no mask loss without part_supervision: masks
    decoder = {n for n, _ in model.named_parameters() if n.startswith("part_decoder.")}
    cmr_reach = reached(model, out["cmr"])
    assert decoder <= cmr_reach and not any(n.startswith("classifier.") for n in cmr_reach)
    assert any(n.startswith("clip.vision_model.") for n in cmr_reach)
    assert any(n.startswith("clip.text_model.") for n in cmr_reach)
    id_reach = reached(model, out["id"])
    assert "classifier.weight" in id_reach and not id_reach & decoder

    model, cfg = tiny(part_supervision="masks")
    assert CPSL.batch_needs(cfg) == frozenset({"part_grid"})
    out = model(batch())
    assert set(out) == {"sdm", "id", "cmr", "slot_mask"}
    mask_reach = reached(model, out["slot_mask"])
    # the mask loss shapes where the slots look: slots, their norm, the attention's query/key
    # projections and the image side; not what the slots carry on, nor the caption side
    assert {"part_decoder.slots", "part_decoder.norm_slots.weight", "part_decoder.norm_image.weight",
            "part_decoder.cross_attn.in_proj_weight"} <= mask_reach
    assert any(n.startswith("clip.vision_model.") for n in mask_reach)
    assert not {n for n in mask_reach if n.startswith(("part_decoder.blocks.", "part_decoder.norm_out.",
                                                      "part_decoder.norm_text.", "part_decoder.cross_attn.out_proj.",
                                                      "clip.text_model.", "classifier."))}


def test_parameter_names_are_the_models_own():
    model, _ = tiny(part_supervision="masks")
    names = [n for n, _ in model.named_parameters()]
    assert {n.split(".")[0] for n in names} == {"clip", "classifier", "part_decoder"}
    assert {n.split(".")[1] for n in names if n.startswith("part_decoder.")} == {
        "slots", "norm_slots", "norm_image", "norm_text", "cross_attn", "blocks", "norm_out"}
    assert model.part_decoder.slots.shape == (8, 64)


def test_features_are_unit_and_score_global_plus_mean_part_cosine():
    model, cfg = tiny(part_score_weight=0.25)
    model.eval()
    b = batch()
    with torch.no_grad():
        image, text = model.encode_image(b["pixel_values"]), model.encode_text(b["input_ids"], b["attention_mask"])
        img, txt = model.image_tokens(b["pixel_values"]), model.text_tokens(b["input_ids"])
        gi, gt = img[:, 0], txt[:, 7]  # the end of text: the 8th attended token
        pi = model.part_decoder(img[:, 1:], "image")[0]
        padding = torch.ones(4, 12, dtype=torch.bool)
        padding[:, 1:7] = False  # words only: no start, end or padding
        pt = model.part_decoder(txt, "text", padding)[0]
    assert image.dtype == text.dtype == torch.float32
    assert torch.allclose(image.norm(dim=1), torch.ones(4)) and torch.allclose(text.norm(dim=1), torch.ones(4))
    cos = torch.nn.functional.cosine_similarity
    for i in range(4):
        for j in range(4):
            want = 0.75 * cos(gt[j], gi[i], dim=0) + 0.25 * cos(pt[j], pi[i], dim=-1).mean()
            assert abs((text[j] @ image[i]).item() - want.item()) < 1e-5


def test_shipped_configs_load_and_bad_switch_is_an_error():
    full, masks = load_config(CONFIGS / "cpsl.yaml"), load_config(CONFIGS / "cpsl-masks.yaml")
    assert isinstance(full, CPSLConfig) and full.part_supervision == "none" and masks.part_supervision == "masks"
    differ = {k for k, v in full.to_dict().items() if masks.to_dict()[k] != v}
    assert differ == {"name", "part_supervision"}
    with pytest.raises(T2IError, match="part_supervision"):
        load_config(CONFIGS / "cpsl.yaml", {"part_supervision": "labels"})
    with pytest.raises(T2IError, match="slot_mask"):
        load_config(CONFIGS / "cpsl-masks.yaml", {"loss_weights": {"sdm": 1.0, "id": 1.0, "cmr": 1.0}})


@pytest.mark.slow
@pytest.mark.parametrize("parts", ["none", "masks"])
def test_cpsl_learns_predicts_evaluates(parts, export_dir, tmp_path):
    """Discovered parts (the paper) and our annotated parts on the slots both learn; measured
    (test R1/mAP, chance R1 5.9): none 26.4/33.0, masks 18.9/32.8."""
    run = tmp_path / "cpsl"
    subprocess.run([*CLI, "train", "--model", "cpsl", "--config", "tiny", "--set", f"part_supervision={parts}",
                    "--dataset", str(export_dir), "--out", str(run)],
                   check=True, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run([*CLI, "predict", "--run", str(run), "--dataset", str(export_dir), "--top-k", "0"], check=True,
                   env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = json.loads((run / "ranks.json").read_text())["meta"]
    assert meta["model"] == "cpsl" and meta["config"] == "cpsl-tiny"
    out = CliRunner().invoke(cli, ["eval", str(export_dir), "--pred", str(run / "ranks.json"), "--json"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.output)
    ids = np.array(load_split(str(export_dir), "test")["vehicle_id"])
    chance = 100 * np.mean([(ids == v).mean() for v in ids])  # expected R1 of a random ranking
    print(f"cpsl-tiny ({parts}) test R1/mAP {metrics['R1']:.1f}/{metrics['mAP']:.1f}, chance R1 {chance:.1f}")
    assert metrics["R1"] >= 2 * chance
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"clip", "classifier", "part_decoder"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "cpsl" and "cmr" in summary["selected"]
    assert ("slot_mask" in summary["selected"]) == (parts == "masks")


def test_every_shipped_config_loads():
    """A shipped config that does not load is a `train --config NAME` that fails (ivt.yaml had
    `mixed_precision: true`, which no config accepts)."""
    from t2iverw.training.config import resolve_config, shipped_configs

    names = shipped_configs()
    assert {"pfcvr", "irra", "ivt", "cpsl", "clip"} <= set(names)
    for name in names:
        cfg = load_config(resolve_config(name))
        assert cfg.name == name
