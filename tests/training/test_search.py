"""`t2iverw search`: a tiny trained run finds the described vehicle, its gallery cache is reused and
rebuilt, the ranking agrees with `predict`, zero-shot CLIP works, and bad input is one `Error:` line."""

from __future__ import annotations

import json
import shutil
from math import comb

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from t2iverw.cli import cli
from t2iverw.errors import T2IError
from t2iverw.search.index import CACHE, open_searcher, split_queries
from t2iverw.training.config import TINY_CONFIG, load_config
from t2iverw.training.engine import train
from t2iverw.training.predict import predict

SEARCH_RUN = {"plfa": False, "bmria": False, "epochs": 24}  # SDM + ID only: ~25 s on one core


@pytest.fixture(scope="module")
def search_run(export_dir, tmp_path_factory):
    """The tiny config without PLFA and BMRIA, trained on the sample's train split (no search cache yet)."""
    run = tmp_path_factory.mktemp("search") / "run"
    train(load_config(TINY_CONFIG, SEARCH_RUN), export_dir, run)
    return run


@pytest.fixture
def run_copy(search_run, tmp_path):
    """A private copy of the run, so a test can change its checkpoint or summary."""
    dst = tmp_path / "run"
    shutil.copytree(search_run, dst, ignore=shutil.ignore_patterns(CACHE, "checkpoints"))
    return dst


def invoke(*args: str):
    return CliRunner().invoke(cli, ["search", *map(str, args)])


def test_top5_finds_the_captions_own_vehicle_more_often_than_chance(search_run, export_dir):
    searcher = open_searcher(search_run, export_dir, device="cpu")
    q = split_queries(export_dir)
    found = [any(h.vehicle_id == v for h in searcher.search(text, 5)) for text, v in zip(q.texts, q.labels)]
    n = len(searcher.image_ids)
    # a random top 5 contains one of the vehicle's k images with probability 1 - C(n - k, 5) / C(n, 5)
    chance = sum(1 - comb(n - searcher.vehicle_ids.count(v), 5) / comb(n, 5) for v in q.labels) / len(q.labels)
    rate = sum(found) / len(found)
    print(f"top-5 hit rate {rate:.3f}, chance {chance:.3f}")
    assert rate >= 2 * chance


def test_results_agree_with_predict(search_run, export_dir, tmp_path):
    """The searcher's top 5 for a test caption is predict's top 5 for that query (a separate ranking path)."""
    ranks = predict(search_run, export_dir, tmp_path / "ranks.json", top_k=5, device="cpu")
    ranks = json.loads(ranks.read_text())["ranks"]
    q = split_queries(export_dir)
    result = invoke(search_run, "--dataset", export_dir, "--json", "--top", "5", "--device", "cpu", q.texts[3])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [h["image_id"] for h in hits] == ranks[q.ids[3]]
    assert [set(h) for h in hits] == [{"image_id", "vehicle_id", "score"}] * 5
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1


def test_cache_is_reused_then_rebuilt_when_the_checkpoint_changes(run_copy, export_dir):
    first = open_searcher(run_copy, export_dir, device="cpu")
    assert first.meta["cache"] == "built" and first.meta["gallery_encodings"] == 1
    cache = run_copy / CACHE / f"{first.meta['cache_key']}.npy"
    before = cache.stat()

    result = invoke(run_copy, "--dataset", export_dir, "--device", "cpu", "a white sedan")
    assert result.exit_code == 0, result.output
    assert "gallery cache: loaded" in result.stdout
    second = open_searcher(run_copy, export_dir, device="cpu")
    assert second.meta["cache"] == "loaded" and second.meta["gallery_encodings"] == 1
    after = cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert torch.equal(second.gallery, first.gallery)

    # a changed checkpoint (other weights) is a new key: the gallery is encoded again, with the new weights
    state = load_file(str(run_copy / "model.safetensors"))
    name = next(k for k in state if k.endswith("visual_projection.weight"))
    state[name] = state[name] * -1
    save_file(state, str(run_copy / "model.safetensors"))
    third = open_searcher(run_copy, export_dir, device="cpu")
    assert third.meta["cache"] == "built" and third.meta["cache_key"] != first.meta["cache_key"]
    assert torch.allclose(third.gallery, -first.gallery, atol=1e-5)  # the projection flipped: so do the features
    assert len(list((run_copy / CACHE).glob("*.npy"))) == 2


def test_zero_shot_clip(tiny_clip_dir, export_dir, tmp_path):
    by_prefix = invoke(f"clip:{tiny_clip_dir}", "--dataset", export_dir, "--json", "--top", "4", "--device", "cpu",
                       "--cache-dir", tmp_path / "cache", "a red SUV")
    assert by_prefix.exit_code == 0, by_prefix.output
    by_option = invoke("--model", "clip", "--clip", tiny_clip_dir, "--dataset", export_dir, "--json", "--top", "4",
                       "--device", "cpu", "--cache-dir", tmp_path / "cache", "a red SUV")
    assert by_option.exit_code == 0, by_option.output
    assert json.loads(by_option.stdout) == json.loads(by_prefix.stdout) and len(json.loads(by_prefix.stdout)) == 4
    searcher = open_searcher(f"clip:{tiny_clip_dir}", export_dir, device="cpu", cache_dir=tmp_path / "cache")
    assert searcher.meta["model"] == "clip" and searcher.meta["cache"] == "loaded"


def one_error_line(result, *expected: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_bad_input(search_run, run_copy, export_dir, tmp_path):
    one_error_line(invoke(tmp_path / "nowhere", "--dataset", export_dir, "a white sedan"), "unknown run")
    one_error_line(invoke(search_run, "--dataset", export_dir, "   "), "query is empty")
    one_error_line(invoke(search_run, "--dataset", export_dir), "query is empty")
    one_error_line(invoke(search_run, "--dataset", export_dir, "a", "white"), "quotes")
    one_error_line(invoke("--model", "clip", "--dataset", export_dir, "a white sedan"), "--clip")

    no_weights = tmp_path / "no-weights"
    shutil.copytree(run_copy, no_weights)
    (no_weights / "model.safetensors").unlink()
    one_error_line(invoke(no_weights, "--dataset", export_dir, "a white sedan"), "no checkpoint")

    summary = json.loads((run_copy / "summary.json").read_text()) | {"dataset_fingerprint": "sha256:0123456789abcdef"}
    (run_copy / "summary.json").write_text(json.dumps(summary))
    one_error_line(invoke(run_copy, "--dataset", export_dir, "a white sedan"), "sha256:0123456789abcdef", "--force")
    forced = invoke(run_copy, "--dataset", export_dir, "--force", "--json", "--device", "cpu", "a white sedan")
    assert forced.exit_code == 0, forced.output
    assert "Warning:" in forced.stderr and "--force" in forced.stderr
    assert len(json.loads(forced.stdout)) == 10
    with pytest.raises(T2IError, match="query is empty"):
        open_searcher(run_copy, export_dir, force=True, device="cpu").search("")
