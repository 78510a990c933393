"""The caption stage on the runner with the template backend: records, provenance, resume, QA, CLI."""

from __future__ import annotations

import json

from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.caption import run_captions
from t2iverw.cli import cli


def log_lines(build) -> list[dict]:
    return [json.loads(line) for line in (build / "captions" / "main.jsonl").read_text().splitlines()]


def test_template_run_captions_every_image_once_from_metadata(build_dir):
    summary = run_captions(build_dir, backend="template", progress=False)
    index = {r["image_id"]: r for r in BuildDir.open(build_dir).images().to_pylist()}
    records = log_lines(build_dir)
    assert summary.pending == summary.done == len(index) == len(records)
    assert {r["image_id"] for r in records} == set(index)
    for seq, rec in enumerate(records, start=1):
        m = index[rec["image_id"]]
        assert rec["caption_id"] == rec["image_id"] and rec["status"] == "ok" and rec["qa"] == []
        assert f"{m['color']} {m['type']}" in rec["text"] and m["model"] in rec["text"]
        assert rec["source"] == "model" and rec["settings"] == {"backend": "template", "model": "metadata-template",
                                                                "template": 1}
        assert rec["image_sha256"] == m["sha256"] and rec["seq"] == seq and rec["run"] == records[0]["run"]
    assert [r["t"] for r in records] == sorted({r["t"] for r in records})  # strictly increasing
    assert summary.qa.captions == len(index)


def test_limit_then_resume_finishes_without_duplicates(build_dir):
    first = run_captions(build_dir, backend="template", limit=5, progress=False)
    assert first.done == 5 and len(log_lines(build_dir)) == 5
    second = run_captions(build_dir, backend="template", progress=False)
    ids = [r["image_id"] for r in log_lines(build_dir)]
    assert second.pending == len(ids) - 5 and len(ids) == len(set(ids)) == BuildDir.open(build_dir).images().num_rows
    third = run_captions(build_dir, backend="template", progress=False)
    assert third.pending == 0 and len(log_lines(build_dir)) == len(ids)
    assert "nothing to do" in third.lines()[0]
    # a second run is a second writer with its own run id, ordered after the first
    assert len({r["run"] for r in log_lines(build_dir)}) == 2


def test_caption_qa_only_reads(build_dir):
    run_captions(build_dir, backend="template", progress=False)
    before = (build_dir / "captions" / "main.jsonl").read_bytes()
    result = CliRunner().invoke(cli, ["caption-qa", str(build_dir)])
    assert result.exit_code == 0, result.output
    assert f"caption QA: {BuildDir.open(build_dir).images().num_rows} captions, 0 flagged" in result.output
    assert (build_dir / "captions" / "main.jsonl").read_bytes() == before
    assert sorted(p.name for p in (build_dir / "captions").iterdir()) == ["main.jsonl", "main.jsonl.lock"]


def test_cli_template_run_prints_summary(build_dir):
    result = CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "template", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "captioned 3 of 3 pending images" in result.output and "caption QA: 3 captions" in result.output
