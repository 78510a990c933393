"""The caption run loop with the template backend: records, resume, QA records, CLI."""

from __future__ import annotations

import json

from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.caption import run_captions
from t2iverw.cli import cli


def log_lines(build) -> list[dict]:
    return [json.loads(line) for line in (build / "captions.jsonl").read_text().splitlines()]


def test_template_run_captions_every_image_once_from_metadata(build_dir):
    summary = run_captions(build_dir, backend="template", progress=False)
    meta = {r["image_id"]: r for r in BuildDir.open(build_dir).images().to_pylist()}
    records = log_lines(build_dir)
    assert summary.pending == summary.done == len(meta) == len(records)
    assert {r["image_id"] for r in records} == set(meta)
    for rec in records:
        m = meta[rec["image_id"]]
        assert rec["caption_id"] == rec["image_id"] and rec["status"] == "ok" and rec["backend"] == "template"
        assert f"{m['color']} {m['type']}" in rec["text"] and m["model"] in rec["text"]
        assert rec["qa"] == [] and rec["prompt_hash"] is None
    assert summary.qa.captions == len(meta) and summary.qa.updated == 0


def test_limit_then_resume_finishes_without_duplicates(build_dir):
    first = run_captions(build_dir, backend="template", limit=5, progress=False)
    assert first.done == 5 and len(log_lines(build_dir)) == 5
    second = run_captions(build_dir, backend="template", progress=False)
    ids = [r["image_id"] for r in log_lines(build_dir)]
    assert second.pending == len(ids) - 5 and len(ids) == len(set(ids)) == BuildDir.open(build_dir).images().num_rows
    third = run_captions(build_dir, backend="template", progress=False)
    assert third.pending == 0 and len(log_lines(build_dir)) == len(ids)


def test_caption_qa_appends_flags_once_and_latest_record_wins(build_dir):
    run_captions(build_dir, backend="template", progress=False)
    build = BuildDir.open(build_dir)
    victim = build.images(["image_id"]).column("image_id")[0].as_py()
    edited = {**build.captions()[victim], "text": "The image shows a car.", "qa": []}
    with build.log_writer("captions") as log:
        log.write(edited)
    before = len(log_lines(build_dir))

    result = CliRunner().invoke(cli, ["caption-qa", str(build_dir)])
    assert result.exit_code == 0, result.output
    assert "1 flagged for review (1 records updated)" in result.output
    assert set(build.captions()[victim]["qa"]) >= {"too_short", "boilerplate", "missing_wheels", "missing_roof"}
    assert len(log_lines(build_dir)) == before + 1

    again = CliRunner().invoke(cli, ["caption-qa", str(build_dir)])
    assert "(0 records updated)" in again.output and len(log_lines(build_dir)) == before + 1


def test_cli_template_run_prints_summary(build_dir):
    result = CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "template", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "captioned 3 of 3 pending images" in result.output and "caption QA: 3 captions" in result.output
