import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from t2iverw.cli import cli


@pytest.fixture(scope="module")
def images(synth_root):
    paths = sorted((synth_root / "images").rglob("*.jpg"))[:3]
    return [Image.open(p).convert("RGB") for p in paths]


def test_shared_encoder_batch_equals_the_per_prompt_loop(segmenter, images):
    batched = segmenter.segment(images)
    looped = segmenter.segment_per_prompt(images)
    assert sum(sum(r.instances) for r in looped) > 0, "thresholds keep nothing: the comparison would be empty"
    for b, ref, img in zip(batched, looped, images):
        assert b.masks.shape == ref.masks.shape == (6, img.height, img.width)
        assert b.instances == ref.instances
        np.testing.assert_allclose(b.scores, ref.scores, atol=1e-5)
        assert (b.masks != ref.masks).mean() < 1e-3  # equal up to boundary pixels
        assert 0 < ref.masks.mean() < 1


def test_unloadable_model_path_is_one_line_and_exit_2(build_dir, tmp_path):
    empty = tmp_path / "no_weights"
    empty.mkdir()
    for model in (str(tmp_path / "missing" / "sam3"), str(empty)):
        result = CliRunner().invoke(cli, ["segment", str(build_dir), "--model", model, "--device", "cpu"])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot load SAM3 from"), result.output
        assert "hf auth login" in lines[0]
