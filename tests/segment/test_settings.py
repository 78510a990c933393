"""Through the segment stage: settings fingerprints (--redo/--keep), failure isolation and OOM halving."""

from __future__ import annotations

import datasets
import torch
from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.export import export_dataset
from t2iverw.segment.run import SegmentWorker, segment_build


def _cli(build_dir, tiny_sam3_dir, low_parts_file, *extra):
    return CliRunner().invoke(cli, ["segment", str(build_dir), "--model", str(tiny_sam3_dir), "--parts",
                                    str(low_parts_file), "--device", "cpu", "--batch-size", "8", *extra])


def test_changed_grid_is_refused_then_redo_redoes_every_image_and_keep_none(build_dir, tiny_sam3_dir, low_parts_file):
    first = _cli(build_dir, tiny_sam3_dir, low_parts_file)
    assert first.exit_code == 0, first.output
    n = BuildDir.open(build_dir).images().num_rows

    refused = _cli(build_dir, tiny_sam3_dir, low_parts_file, "--grid", "12x12")
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert f"{n} parts records of this build were made with other settings: grid [24, 24] -> [12, 12]" in refused.output
    assert "--redo" in refused.output and "--keep" in refused.output

    kept = _cli(build_dir, tiny_sam3_dir, low_parts_file, "--grid", "12x12", "--keep")
    assert kept.exit_code == 0 and "nothing to do" in kept.output
    assert {tuple(r["grid"]["shape"]) for r in BuildDir.open(build_dir).parts().values()} == {(24, 24)}

    redone = _cli(build_dir, tiny_sam3_dir, low_parts_file, "--grid", "12x12", "--redo")
    assert redone.exit_code == 0 and f"segmented {n} of {n} pending images" in redone.output
    parts = BuildDir.open(build_dir).parts()
    assert len(parts) == n and {tuple(r["grid"]["shape"]) for r in parts.values()} == {(12, 12)}
    assert _cli(build_dir, tiny_sam3_dir, low_parts_file, "--grid", "12x12").exit_code == 0  # now consistent


def test_changed_thresholds_are_a_different_setting(build_dir, tiny_sam3_dir, low_parts_file, tmp_path):
    assert _cli(build_dir, tiny_sam3_dir, low_parts_file, "--limit", "2").exit_code == 0
    stricter = tmp_path / "parts.yaml"
    stricter.write_text(low_parts_file.read_text().replace("0.251", "0.3", 1))
    refused = _cli(build_dir, tiny_sam3_dir, stricter)
    assert refused.exit_code == 2 and "thresholds.windows 0.251 -> 0.3" in refused.output
    assert "parts_sha256" in refused.output


def test_export_card_states_the_settings_of_each_column(build_dir, tiny_sam3_dir, low_parts_file, tmp_path):
    assert _cli(build_dir, tiny_sam3_dir, low_parts_file, "--limit", "5").exit_code == 0
    assert _cli(build_dir, tiny_sam3_dir, low_parts_file, "--grid", "24x24", "--min-cover", "0.25", "--keep",
                "--limit", "3").exit_code == 0
    export_dataset(build_dir, tmp_path / "ds", include_images=False)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "**2 different settings**" in card
    assert "- 5 images, source `model`" in card and "- 3 images, source `model`" in card
    assert f"model={tiny_sam3_dir.name}" in card and "min_cover=0.25" in card and "min_cover=0.5" in card
    assert datasets.load_dataset(str(tmp_path / "ds"))["train"].num_rows > 0


def test_a_model_error_on_one_image_fails_that_image_alone(build_dir, tiny_sam3_dir, low_parts_file, segmenter,
                                                           monkeypatch):
    bd = BuildDir.open(build_dir)
    rows = bd.images(["image_id", "width", "height"]).to_pylist()
    victim = rows[5]
    real = segmenter.segment

    def segment(images):
        if any(im.size == (victim["width"], victim["height"]) for im in images):
            raise ValueError("cannot segment this one")
        return real(images)

    monkeypatch.setattr(segmenter, "segment", segment)
    n_victims = sum((r["width"], r["height"]) == (victim["width"], victim["height"]) for r in rows)
    report = segment_build(bd, SegmentWorker(str(tiny_sam3_dir), low_parts_file, segmenter=segmenter, batch_size=4),
                           progress=False)
    latest = bd.latest("parts")
    failed = {i: r for i, r in latest.items() if r["status"] == "failed"}
    assert len(failed) == n_victims and victim["image_id"] in failed
    assert failed[victim["image_id"]]["reason"] == "error"
    assert failed[victim["image_id"]]["detail"] == "ValueError: cannot segment this one"
    assert report.ok == len(rows) - n_victims == len(bd.parts()) and len(latest) == len(rows)


def test_out_of_memory_halves_the_batch_before_failing_anything(build_dir, tiny_sam3_dir, low_parts_file, segmenter,
                                                                monkeypatch):
    sizes = []
    real = segmenter.segment

    def segment(images):
        sizes.append(len(images))
        if len(images) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(images)

    monkeypatch.setattr(segmenter, "segment", segment)
    bd = BuildDir.open(build_dir)
    report = segment_build(bd, SegmentWorker(str(tiny_sam3_dir), low_parts_file, segmenter=segmenter, batch_size=8),
                           limit=8, progress=False)
    assert report.ok == 8 and not report.failed
    assert sizes == [8, 4, 2, 2, 4, 2, 2]
