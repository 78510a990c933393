import json

import datasets
import numpy as np
from click.testing import CliRunner

from t2iverw.cli import cli


def test_demo_builds_loads_and_evaluates(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "--ids", "8"])
    assert result.exit_code == 0, result.output
    for step in ("synth", "index", "caption", "segment", "split", "export", "load", "eval", "train", "predict + eval",
                 "report"):
        assert f"] {step}:" in result.output
    assert str(tmp_path / "report" / "index.html") in result.output and (tmp_path / "report" / "gallery.png").exists()
    assert f"t2iverw review {tmp_path / 'build'}" in result.output
    assert "colour words vs pixels" in result.output and "mINP" in result.output
    ds = datasets.load_dataset(str(tmp_path / "dataset"))
    assert not set(ds["train"]["vehicle_id"]) & set(ds["test"]["vehicle_id"])
    ranks = json.loads((tmp_path / "run" / "ranks.json").read_text())["ranks"]  # {"meta": ..., "ranks": ...}
    assert sorted(ranks) == sorted(ds["test"]["caption_id"])
    assert all(sorted(r) == sorted(ds["test"]["image_id"]) for r in ranks.values())
    row = ds["test"][0]
    assert row["color"] in row["caption"]
    assert np.array(row["part_grid"]).shape == (6, 24, 24) and np.array(row["part_grid"]).any()
