"""Caption settings fingerprints with the in-process transformers backend (a real tiny Qwen3-VL)."""

from __future__ import annotations

from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.cli import cli


def _caption(build_dir, model, *extra):
    return CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "transformers", "--model", str(model),
                                    "--max-tokens", "32", *extra])


def test_changed_prompt_is_refused_then_redo_redoes_every_image_and_keep_none(build_dir, scripted_vlm, tmp_path):
    n = BuildDir.open(build_dir).images().num_rows
    assert _caption(build_dir, scripted_vlm).exit_code == 0
    first = BuildDir.open(build_dir).captions()
    assert len(first) == n and {r["settings"]["hints"] for r in first.values()} == {"witness"}

    prompt = tmp_path / "prompt.md"
    prompt.write_text("Describe the vehicle for a witness statement.\n{hints}\n")
    refused = _caption(build_dir, scripted_vlm, "--prompt", str(prompt))
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert f"{n} captions records of this build were made with other settings: prompt_sha256 " in refused.output

    kept = _caption(build_dir, scripted_vlm, "--prompt", str(prompt), "--keep")
    assert kept.exit_code == 0 and "nothing to do" in kept.output
    assert BuildDir.open(build_dir).captions() == first

    redone = _caption(build_dir, scripted_vlm, "--prompt", str(prompt), "--redo")
    assert redone.exit_code == 0 and f"captioned {n} of {n} pending images" in redone.output
    after = BuildDir.open(build_dir).captions()
    assert {r["fp"] for r in after.values()} == {next(iter(after.values()))["fp"]} != {r["fp"] for r in first.values()}
    assert all(after[i]["t"] > first[i]["t"] for i in after)  # the newest record wins


def test_hint_mode_is_a_setting_and_recorded(build_dir, scripted_vlm):
    assert _caption(build_dir, scripted_vlm, "--limit", "2").exit_code == 0
    refused = _caption(build_dir, scripted_vlm, "--hints", "model")
    assert refused.exit_code == 2 and "hints witness -> model" in refused.output
    assert _caption(build_dir, scripted_vlm, "--hints", "model", "--keep", "--limit", "2").exit_code == 0
    hints = sorted(r["settings"]["hints"] for r in BuildDir.open(build_dir).captions().values())
    assert hints == ["model", "model", "witness", "witness"]
