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


def test_caption_qa_counts_only_each_images_latest_ok_caption(build_dir):
    """Across logs, a superseded caption, a later failure and a record of no current image are not counted."""
    from t2iverw.caption import run_qa
    from t2iverw.runner import open_log

    bd = BuildDir.open(build_dir)
    rows = bd.images(["image_id", "color"]).to_pylist()
    (a, colour_a), (b, _), (c, _) = ((r["image_id"], r["color"]) for r in rows[:3])
    other = "purple" if colour_a != "purple" else "orange"
    settings = {"model": "test"}
    with open_log(bd, "captions", "main", source="model", settings=settings) as log:
        log.append([{"image_id": a, "status": "ok", "text": f"a {colour_a} car"},
                    {"image_id": b, "status": "ok", "text": "one two"},
                    {"image_id": c, "status": "failed", "reason": "empty", "text": ""}])
    with open_log(bd, "captions", "review-x", source="human", settings=settings) as log:
        log.append([{"image_id": a, "status": "ok", "text": f"a {other} car with four wheels"},  # supersedes a's
                    {"image_id": b, "status": "failed", "reason": "empty", "text": ""},  # b's latest is a failure
                    {"image_id": c, "status": "ok", "text": "x"}])
    summary = run_qa(bd)
    assert (summary.captions, summary.flagged) == (2, 2)
    assert (summary.words_min, summary.words_max, summary.words_mean, summary.words_median) == (1, 6, 3.5, 3.5)
    assert summary.by_flag["colour_mismatch"] == 1 and summary.by_flag["too_short"] == 2
    assert summary.by_flag["missing_wheels"] == 1 and summary.by_flag["missing_lights"] == 2
