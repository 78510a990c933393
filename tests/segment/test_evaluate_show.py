import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.constants import PARTS
from t2iverw.runner import open_log
from t2iverw.segment.evaluate import evaluate_parts
from t2iverw.segment.masks import part_record
from t2iverw.segment.model import PartMasks
from t2iverw.synth import read_truth


def _write_from_truth(build: BuildDir, truth_root: Path, order: list[int]) -> None:
    """Records whose part i is the truth mask of part order[i]: identity = a perfect predictor."""
    with open_log(build, "parts", "main", source="truth", settings={"model": "truth", "order": order}) as log:
        for row in build.images(["image_id", "path"]).to_pylist():
            truth = read_truth(truth_root, str(Path(row["path"]).relative_to("images").with_suffix("")))[order]
            masks = PartMasks(masks=truth, scores=[1.0] * 6, instances=[int(m.any()) for m in truth])
            log.append([part_record(row["image_id"], masks, grid=(24, 24), input_size=384, min_cover=0.5)])


def test_perfect_predictor_scores_iou_one(build_dir, synth_root):
    build = BuildDir.open(build_dir)
    _write_from_truth(build, synth_root, order=list(range(6)))
    result = evaluate_parts(build, synth_root)
    assert result["images"] == build.images().num_rows
    for part in PARTS:
        row = result["parts"][part]
        assert row["iou"] == 1.0 and row["grid_precision"] == 1.0 and row["grid_recall"] == 1.0, part


def test_permuted_parts_score_low(build_dir, synth_root):
    build = BuildDir.open(build_dir)
    _write_from_truth(build, synth_root, order=[1, 2, 3, 4, 5, 0])
    result = evaluate_parts(build, synth_root)
    ious = [result["parts"][p]["iou"] for p in PARTS]
    assert all(not math.isnan(x) and x < 0.3 for x in ious), ious

    out = CliRunner().invoke(cli, ["segment-eval", str(build_dir), "--truth", str(synth_root)])
    assert out.exit_code == 0, out.output
    windows = next(line for line in out.output.splitlines() if line.startswith("windows"))
    assert float(windows.split()[1]) == pytest.approx(result["parts"]["windows"]["iou"], abs=1e-3)


def test_eval_without_truth_folder_is_a_clear_error(build_dir, tmp_path):
    out = CliRunner().invoke(cli, ["segment-eval", str(build_dir), "--truth", str(tmp_path)])
    assert out.exit_code == 2 and "has no part_masks/" in out.output


def test_show_draws_masks_grid_and_caption(build_dir, synth_root, tmp_path):
    build = BuildDir.open(build_dir)
    _write_from_truth(build, synth_root, order=list(range(6)))
    image_id = build.images(["image_id"]).column("image_id")[0].as_py()

    bare = CliRunner().invoke(cli, ["show", str(build_dir), image_id, "--out", str(tmp_path / "bare.png")])
    assert bare.exit_code == 0, bare.output
    with open_log(build, "captions", "main", source="human", settings={}) as log:
        log.append([{"image_id": image_id, "caption_id": image_id, "status": "ok",
                     "text": "A red sedan with a black roof, round headlights and five-spoke wheels. " * 3}])
    captioned = CliRunner().invoke(cli, ["show", str(build_dir), image_id, "--out", str(tmp_path / "cap.png")])
    assert captioned.exit_code == 0, captioned.output

    bare_png, cap_png = (np.asarray(Image.open(tmp_path / n).convert("RGB")) for n in ("bare.png", "cap.png"))
    assert cap_png.shape[0] > bare_png.shape[0]  # room for the caption under the crop
    assert cap_png.shape[1] == bare_png.shape[1]


def test_show_of_an_unsegmented_image_says_what_to_run(build_dir):
    image_id = BuildDir.open(build_dir).images(["image_id"]).column("image_id")[0].as_py()
    out = CliRunner().invoke(cli, ["show", str(build_dir), image_id])
    assert out.exit_code == 0 and "has no part masks yet: run `t2iverw segment" in out.output
    assert (build_dir / "previews" / f"{image_id}.png").read_bytes().startswith(b"\x89PNG")
    out = CliRunner().invoke(cli, ["show", str(build_dir), "no-such-image"])
    assert out.exit_code == 2 and out.output.startswith("Error:") and "no-such-image" in out.output
