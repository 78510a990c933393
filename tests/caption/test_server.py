"""The caption stage against a real OpenAI-compatible server (`transformers serve` with tiny Qwen3-VLs).

The random model never ends a sentence, so its replies are cut off at max_tokens: those
tests assert the fault handling (retry once, then a failed record with its reason),
resume and endpoint failures. The scripted checkpoint answers one short sentence and
stops, so its tests assert the records and QA flags of usable captions.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest
from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.caption import run_captions
from t2iverw.cli import cli
from t2iverw.errors import T2IError

MAX_TOKENS = 12  # the random model never stops, so every reply is cut off here


def log_ids(build) -> list[str]:
    path = build / "captions" / "main.jsonl"
    return [json.loads(line)["image_id"] for line in path.read_text().splitlines()] if path.exists() else []


def n_images(build) -> int:
    return BuildDir.open(build).images().num_rows


@pytest.fixture
def options(tiny_vlm):
    """run_captions options for a server: the random model, small max_tokens, fast give-up."""

    def make(server, **kw):
        return dict(backend="openai", endpoints=[server.url], model=str(tiny_vlm), max_tokens=MAX_TOKENS,
                    concurrency=4, progress=False, retries=2, backoff=0.1) | kw

    return make


def test_full_run_records_every_image_with_provenance(build_dir, vlm_server, options, tiny_vlm):
    summary = run_captions(build_dir, **options(vlm_server))
    records = BuildDir.open(build_dir).latest("captions")
    assert len(log_ids(build_dir)) == len(records) == n_images(build_dir) == summary.pending
    for rec in records.values():
        assert rec["status"] == "failed" and rec["reason"] == "cut_off" and rec["attempts"] == 2
        assert rec["finish_reason"] == "length" and rec["usage"]["completion_tokens"] == MAX_TOKENS
        assert rec["endpoint"] == vlm_server.url and rec["seed"] == 1 and rec["latency_s"] > 0
        settings = rec["settings"]
        assert settings["backend"] == "openai" and settings["model"] == str(tiny_vlm) and settings["hints"] == "witness"
        assert settings["sampling"] == {"max_tokens": MAX_TOKENS, "temperature": 0.7, "seed": 0}
        assert len(settings["prompt_sha256"]) == 64
    assert summary.failed == {"cut_off": len(records)} and summary.done == 0

    again = run_captions(build_dir, **options(vlm_server))
    assert again.pending == 0 and len(log_ids(build_dir)) == len(records)
    retried = run_captions(build_dir, **options(vlm_server, retry_failed=True, limit=3))
    assert retried.pending == 3 and len(log_ids(build_dir)) == len(records) + 3


def test_dead_endpoint_is_skipped_and_live_one_does_the_work(build_dir, vlm_server, dead_endpoint, options):
    run_captions(build_dir, **options(vlm_server, endpoints=[dead_endpoint, vlm_server.url], limit=8))
    records = BuildDir.open(build_dir).latest("captions")
    assert len(records) == 8 and {r["endpoint"] for r in records.values()} == {vlm_server.url}


def test_no_server_is_one_line_and_exit_2_without_leaking_the_key(build_dir, dead_endpoint, monkeypatch):
    monkeypatch.setenv("T2IVERW_API_KEY", "sk-secret-123")
    url = dead_endpoint
    result = CliRunner().invoke(cli, ["caption", str(build_dir), "--endpoint", url])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(f"Error: no OpenAI-compatible server answers at {url}")
    assert "serve_vllm.sh" in result.output and "sk-secret" not in result.output
    assert log_ids(build_dir) == []


def test_corrupt_and_missing_images_fail_alone(own_source_build, vlm_server, options):
    build = BuildDir.open(own_source_build)
    rows = build.images(["image_id", "path"]).to_pylist()
    build.image_path(rows[0]["path"]).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    build.image_path(rows[1]["path"]).unlink()
    run_captions(own_source_build, **options(vlm_server))
    records = build.latest("captions")
    assert len(records) == len(rows)
    for row in rows[:2]:
        assert records[row["image_id"]]["reason"] == "bad_image" and row["path"] in records[row["image_id"]]["detail"]
    assert Counter(r["reason"] for r in records.values()) == {"bad_image": 2, "cut_off": len(rows) - 2}


def test_killed_run_resumes_without_duplicates(build_dir, vlm_server, options, tiny_vlm, kill_after_records):
    cmd = [sys.executable, "-m", "t2iverw.cli", "caption", str(build_dir), "--endpoint", vlm_server.url,
           "--model", str(tiny_vlm), "--max-tokens", str(MAX_TOKENS), "--concurrency", "2"]
    kill_after_records(cmd, build_dir, 6)
    kept = log_ids(build_dir)
    assert 6 <= len(kept) < n_images(build_dir), "the run should have been killed part-way"

    summary = run_captions(build_dir, **options(vlm_server))
    ids = log_ids(build_dir)
    assert summary.pending == n_images(build_dir) - len(kept)
    assert ids[: len(kept)] == kept and len(ids) == len(set(ids)) == n_images(build_dir)


def test_server_stopped_mid_run_fails_clearly_then_rerun_completes(build_dir, start_server, options, after_records):
    server = start_server()
    with after_records(build_dir, 5, server.stop), \
            pytest.raises(T2IError, match=r"gave up .* \(connection to .* failed\).*re-run") as err:
        run_captions(build_dir, **options(server))
    assert "\n" not in str(err.value)
    kept = log_ids(build_dir)
    assert 5 <= len(kept) < n_images(build_dir) and len(kept) == len(set(kept))

    run_captions(build_dir, **options(start_server(port=server.port)))
    ids = log_ids(build_dir)
    assert ids[: len(kept)] == kept and len(ids) == len(set(ids)) == n_images(build_dir)


def scripted_expectations(build_dir) -> dict[str, set[str]]:
    """image_id -> the QA flags the scripted answer (blue sedan; names lights, wheels, roof) must get."""
    expected = {}
    for row in BuildDir.open(build_dir).images(["image_id", "color", "type"]).to_pylist():
        flags = {"too_short", "missing_windows"}  # 11 words; it names lights, wheels and roof
        if row["color"] not in ("blue", "black"):
            flags.add("colour_mismatch")
        if row["type"] != "sedan":
            flags.add("type_mismatch")
        expected[row["image_id"]] = flags
    return expected


def test_usable_captions_are_ok_records_with_qa_flags(build_dir, vlm_server, options, scripted_vlm,
                                                      scripted_answer):
    summary = run_captions(build_dir, **options(vlm_server, model=str(scripted_vlm), max_tokens=64))
    records = BuildDir.open(build_dir).latest("captions")
    expected = scripted_expectations(build_dir)
    assert summary.done == len(records) == len(expected) and not summary.failed
    for image_id, rec in records.items():
        assert rec["status"] == "ok" and rec["text"] == scripted_answer
        assert rec["attempts"] == 1 and rec["finish_reason"] == "stop" and rec["seed"] == 0
        assert set(rec["qa"]) == expected[image_id]
    assert summary.qa.captions == len(records) and summary.qa.flagged == len(records)
    assert summary.qa.words_mean == 11 and f"mean {11:.1f} words" in summary.lines()[0]
    assert BuildDir.open(build_dir).captions().keys() == records.keys()


def test_transformers_backend_in_process_writes_the_same_records(build_dir, tiny_vlm, scripted_vlm,
                                                                  scripted_answer):
    summary = run_captions(build_dir, backend="transformers", model=str(tiny_vlm), max_tokens=MAX_TOKENS,
                           limit=3, progress=False)
    records = BuildDir.open(build_dir).latest("captions")
    assert summary.pending == len(records) == 3
    for rec in records.values():
        assert rec["settings"]["backend"] == "transformers" and rec["endpoint"] is None
        assert rec["settings"]["model"] == tiny_vlm.name and rec["settings"]["checkpoint"].startswith("sha256:")
        assert rec["status"] == "failed" and rec["reason"] == "cut_off" and rec["attempts"] == 2
        assert rec["usage"]["completion_tokens"] == MAX_TOKENS and rec["usage"]["prompt_tokens"] > 0

    run_captions(build_dir, backend="transformers", model=str(scripted_vlm), max_tokens=64, limit=2,
                 progress=False)
    records = BuildDir.open(build_dir).latest("captions")
    expected = scripted_expectations(build_dir)
    ok = {k: r for k, r in records.items() if r["status"] == "ok"}
    assert len(records) == 5 and len(ok) == 2
    for image_id, rec in ok.items():
        assert rec["text"] == scripted_answer and rec["finish_reason"] == "stop" and rec["attempts"] == 1
        assert set(rec["qa"]) == expected[image_id]


def test_transformers_backend_unloadable_model_is_exit_2(build_dir, tmp_path):
    result = CliRunner().invoke(cli, ["caption", str(build_dir), "--backend", "transformers",
                                      "--model", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "Error: cannot load model" in result.output
