from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.runner import shard_of


def test_segment_cli_with_shard_grid_limit_and_previews(build_dir, tiny_sam3_dir, low_parts_file):
    args = ["segment", str(build_dir), "--model", str(tiny_sam3_dir), "--parts", str(low_parts_file),
            "--device", "cpu", "--shard", "1/2", "--grid", "12x12", "--limit", "3", "--preview", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "segmented 3 of 3 pending images" in result.output and "failed" not in result.output
    assert next(line for line in result.output.splitlines() if line.startswith("wheels")).split()[1].endswith("%")
    records = BuildDir.open(build_dir).parts()
    assert len(records) == 3 and all(shard_of(i, 2) == 1 for i in records)
    assert all(r["grid"]["shape"] == [12, 12] for r in records.values())
    assert sorted(p.stem for p in (build_dir / "previews").glob("*.png")) == sorted(records)[:2]
    assert (build_dir / "parts" / "shard-00001-of-00002.jsonl").exists()


def test_bad_shard_is_one_line_and_exit_2(build_dir):
    result = CliRunner().invoke(cli, ["segment", str(build_dir), "--shard", "2/2"])
    assert result.exit_code == 2 and result.output.strip() == "Error: --shard 2/2: need 0 <= i < N"


def test_grid_that_does_not_divide_the_input_is_refused_before_loading(build_dir):
    result = CliRunner().invoke(cli, ["segment", str(build_dir), "--grid", "25x25"])
    assert result.exit_code == 2 and "does not divide the input size 384" in result.output


def test_nothing_pending_does_not_load_the_model(build_dir, tmp_path):
    import numpy as np

    from t2iverw.constants import GRID
    from t2iverw.grid import pack_grid
    from t2iverw.runner import open_log

    bd = BuildDir.open(build_dir)
    empty = {"size": [1, 1], "counts": "11"}
    with open_log(bd, "parts", "main", source="model", settings={"model": "earlier run"}) as log:
        for image_id in bd.images(["image_id"]).column("image_id").to_pylist():
            log.append([{"image_id": image_id, "status": "ok", "masks": [empty] * 6, "scores": [0.0] * 6,
                       "instances": [0] * 6, "area": [0.0] * 6,
                       "grid": {"shape": list(GRID), "input_size": 384, "min_cover": 0.5,
                                "cells": [pack_grid(np.zeros(GRID, bool))] * 6}}])
    # A model path that cannot load would exit 2 if the command tried to load it.
    refused = CliRunner().invoke(cli, ["segment", str(build_dir), "--model", str(tmp_path / "no-model")])
    assert refused.exit_code == 2 and "made with other settings" in refused.output
    out = CliRunner().invoke(cli, ["segment", str(build_dir), "--model", str(tmp_path / "no-model"), "--keep"])
    assert out.exit_code == 0, out.output
    assert "nothing to do" in out.output and "windows" in out.output
