import json
import re

import datasets
import numpy as np
from click.testing import CliRunner

from t2iverw.cli import cli


def test_demo_builds_loads_and_evaluates(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "--ids", "8"])
    assert result.exit_code == 0, result.output
    for step in ("synth", "index", "caption", "segment", "split", "export", "load", "eval", "train", "predict + eval",
                 "leaderboard", "search", "report"):
        assert f"] {step}:" in result.output
    assert str(tmp_path / "report" / "index.html") in result.output and (tmp_path / "report" / "gallery.png").exists()
    assert f"t2iverw review {tmp_path / 'build'}" in result.output
    assert "colour words vs pixels" in result.output and "mINP" in result.output
    board = (tmp_path / "leaderboard" / "LEADERBOARD.md").read_text()
    measured = [line for line in board.split("published, not reproduced")[0].splitlines() if line.startswith("| run")]
    assert sorted(line.split(" | ")[1] for line in measured) == ["irra", "pfcvr"]  # the model column of both runs
    assert (tmp_path / "leaderboard" / "leaderboard.html").exists()
    test_images = set(datasets.load_dataset(str(tmp_path / "dataset"), split="test")["image_id"])
    searched = result.output.split("] search:")[1].split("] report:")[0]  # progress bars share the stream
    hits = re.findall(r"(-?\d+\.\d{3})  (\S+)  \(vehicle \S+\)", searched)
    assert len(hits) == 3 and all(image in test_images for _, image in hits)
    assert [float(score) for score, _ in hits] == sorted((float(score) for score, _ in hits), reverse=True)
    ds = datasets.load_dataset(str(tmp_path / "dataset"))
    assert not set(ds["train"]["vehicle_id"]) & set(ds["test"]["vehicle_id"])
    ranks = json.loads((tmp_path / "run" / "ranks.json").read_text())["ranks"]  # {"meta": ..., "ranks": ...}
    assert sorted(ranks) == sorted(ds["test"]["caption_id"])
    assert all(sorted(r) == sorted(ds["test"]["image_id"]) for r in ranks.values())
    row = ds["test"][0]
    assert row["color"] in row["caption"]
    assert np.array(row["part_grid"]).shape == (6, 24, 24) and np.array(row["part_grid"]).any()
