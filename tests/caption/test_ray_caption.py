"""The Ray Data caption pipeline (pipelines/ray_caption.py) against a real `transformers serve`:
complete, resumable, and the same records as the in-process run."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.caption import run_captions

pytest.importorskip("ray")


def test_ray_captions_equal_the_in_process_run(build_dir, tmp_path, vlm_server, scripted_vlm, scripted_answer,
                                               local_ray, ray_launcher):
    in_process = tmp_path / "in-process"
    shutil.copytree(build_dir, in_process)
    options = ["--endpoint", vlm_server.url, "--model", str(scripted_vlm), "--max-tokens", "64", "--concurrency", "4"]
    run_captions(in_process, endpoints=[vlm_server.url], model=str(scripted_vlm), max_tokens=64, concurrency=4,
                 progress=False)

    main = ray_launcher("ray_caption")
    first = CliRunner().invoke(main, [str(build_dir), *options, "--limit", "5"], catch_exceptions=False)
    assert first.exit_code == 0 and "captioned 5 of 5 pending images" in first.output, first.output
    rest = CliRunner().invoke(main, [str(build_dir), *options, "--actors", "2"], catch_exceptions=False)
    n = BuildDir.open(build_dir).images().num_rows
    assert rest.exit_code == 0 and f"captioned {n - 5} of {n - 5} pending images" in rest.output, rest.output

    lines = (build_dir / "captions" / "main.jsonl").read_text().splitlines()
    assert len(lines) == n
    on_ray, local = BuildDir.open(build_dir).latest("captions"), BuildDir.open(in_process).latest("captions")
    assert sorted(on_ray) == sorted(local)
    for image_id, rec in on_ray.items():
        ref = local[image_id]
        assert (rec["status"], rec["text"], rec["seed"], rec["qa"]) == (ref["status"], ref["text"], ref["seed"], ref["qa"])
        assert rec["text"] == scripted_answer and rec["settings"] == ref["settings"] and rec["endpoint"] == vlm_server.url

    refused = CliRunner().invoke(main, [str(build_dir), *options, "--max-tokens", "32"])
    assert refused.exit_code == 2 and "sampling.max_tokens 64 -> 32" in refused.output
