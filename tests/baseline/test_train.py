"""Training, resuming, prediction and the CLI end to end on the exported synthetic sample."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from t2iverw.baseline.config import TINY_CONFIG, load_config
from t2iverw.baseline.data import load_export, split_train
from t2iverw.baseline.engine import train, warmup_cosine
from t2iverw.baseline.model import build_model, load_clip
from t2iverw.baseline.predict import predict
from t2iverw.baseline.retrieval import score_matrix
from t2iverw.cli import cli
from t2iverw.evaluation import evaluate

FAST = {"aug": False, "epochs": 3, "batch_size": 32, "val_ratio": 0.2}


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # small ops: a second thread only spins on shared cores
CLI = [sys.executable, "-c", "from t2iverw.cli import main; main()"]


@pytest.fixture(scope="session")
def trained_run(export_dir, tmp_path_factory):
    """The tiny config (random CLIP, from scratch) trained on the sample's train split with `t2iverw train`."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cmd = [*CLI, "train", "--dataset", str(export_dir), "--out", str(run), "--config", str(TINY_CONFIG)]
    subprocess.run(cmd, check=True, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return run


def _test_metrics(scores: np.ndarray, test) -> dict[str, float]:
    labels = test["vehicle_id"]  # every test row has a caption here, so queries = gallery rows
    return evaluate(scores, labels, labels)


@pytest.mark.slow
def test_it_learns_colour_and_type(trained_run, export_dir, tmp_path):
    test = load_export(str(export_dir))["test"]
    predict(trained_run, export_dir, tmp_path / "ranks.json", tmp_path / "scores.npy")
    trained = _test_metrics(np.load(tmp_path / "scores.npy"), test)

    cfg = load_config(trained_run / "config.yaml")
    clip, tokenizer = load_clip(trained_run / "clip_init", cfg.image_size)  # the same random start
    untrained_model = build_model(clip, tokenizer, cfg, 1)
    scores, _ = score_matrix(untrained_model, test, tokenizer, cfg.image_size, cfg.text_length, 64, "cpu")
    untrained = _test_metrics(scores, test)

    ids = np.array(test["vehicle_id"])
    chance = 100 * np.mean([(ids == v).mean() for v in ids])  # expected R1 of a random ranking
    print(f"test R1/mAP: trained {trained['R1']:.1f}/{trained['mAP']:.1f}, "
          f"untrained {untrained['R1']:.1f}/{untrained['mAP']:.1f}, chance R1 {chance:.1f}")
    # Measured: trained 34.0/31.6, untrained 15.1/13.8, chance 5.9 (R1 is 34.0 at 10, 12 and 14 epochs alike).
    assert trained["R1"] >= 3 * chance
    assert trained["R1"] >= 1.5 * untrained["R1"] and trained["mAP"] >= 1.5 * untrained["mAP"]


def test_run_directory_holds_logs_curve_and_no_test_identity(trained_run, export_dir):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    cfg = load_config(trained_run / "config.yaml")
    assert [r["epoch"] for r in records] == list(range(1, cfg.epochs + 1))
    assert all({"sdm", "id", "part_itc", "mlm", "mim", "loss", "lr"} <= set(r) for r in records)
    assert records[-1]["loss"] < records[0]["loss"]
    assert (trained_run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    test_ids = set(load_export(str(export_dir))["test"]["vehicle_id"])
    assert not test_ids & set(json.loads((trained_run / "run.json").read_text())["classes"])


def test_predict_writes_full_rankings_in_score_order(trained_run, export_dir, tmp_path):
    test = load_export(str(export_dir))["test"]
    result = CliRunner().invoke(cli, ["predict", "--run", str(trained_run), "--dataset", str(export_dir),
                                      "--out", str(tmp_path / "ranks.json"), "--scores", str(tmp_path / "s.npy")])
    assert result.exit_code == 0, result.output
    ranks, scores = json.loads((tmp_path / "ranks.json").read_text()), np.load(tmp_path / "s.npy")
    queries = sorted(c for c, t in zip(test["caption_id"], test["caption"]) if t)  # the evaluator's order
    gallery = sorted(test["image_id"])
    assert list(ranks) == queries and scores.shape == (len(queries), len(test))
    for q, row in zip(queries, scores):
        assert sorted(ranks[q]) == gallery
        assert ranks[q][0] == gallery[int(np.argmax(row))]
    predict(trained_run, export_dir, tmp_path / "top3.json", top_k=3)
    top3 = json.loads((tmp_path / "top3.json").read_text())
    assert all(top3[q] == ranks[q][:3] for q in queries)


def test_eval_reads_predicted_scores_and_ranks_alike(trained_run, export_dir, tmp_path):
    """The score matrix is written in eval's order, so both inputs give the same numbers,
    also when the export's row order is not the id order (here: test rows reversed)."""
    import shutil

    import pyarrow.parquet as pq

    from t2iverw.evaluation import evaluate_predictions

    export = tmp_path / "export-reversed"  # load_dataset caches by directory name too
    shutil.copytree(export_dir, export)
    for shard in (export / "data").glob("test-*.parquet"):
        table = pq.read_table(shard)
        pq.write_table(table.take(list(reversed(range(table.num_rows)))), shard)
    predict(trained_run, export, tmp_path / "ranks.json", tmp_path / "scores.npy")
    by_ranks = evaluate_predictions(export, ranks=tmp_path / "ranks.json").metrics
    by_scores = evaluate_predictions(export, scores=tmp_path / "scores.npy").metrics
    ids = load_export(str(export))["test"]["image_id"]
    assert ids[0] > ids[-1], "the export's rows must not be in id order for this test to mean anything"
    assert by_ranks == by_scores


def test_resume_after_kill_continues_from_the_saved_epoch(export_dir, tmp_path, capfd):
    run = tmp_path / "run"
    sets = [a for k, v in FAST.items() for a in ("--set", f"{k}={v}")]
    cmd = [*CLI, "train", "--dataset", str(export_dir), "--out", str(run), "--config", str(TINY_CONFIG), *sets]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    try:
        deadline = time.time() + 240
        while not list((run / "checkpoints").glob("epoch-0001")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    done = sorted(p.name for p in (run / "checkpoints").glob("epoch-*") if not p.name.endswith(".tmp"))
    assert done and done[-1] != "epoch-0003", "the run was not killed mid-training"
    killed_after = int(done[-1].split("-")[1])

    cfg = load_config(TINY_CONFIG, FAST)
    train(cfg, export_dir, run)
    assert f"resuming after epoch {killed_after}" in capfd.readouterr().out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(0 <= r["val_r1"] <= 100 and 0 <= r["val_map"] <= 100 for r in records)
    n_fit = len(split_train(load_export(str(export_dir))["train"], cfg.val_ratio, cfg.seed).fit)
    steps = math.ceil(n_fit / cfg.batch_size)  # the scheduler resumed where it stopped:
    for r in records:
        expected = cfg.lr * warmup_cosine(r["epoch"] * steps, cfg.warmup_epochs * steps, cfg.epochs * steps, cfg.warmup_factor)
        assert r["lr"] == pytest.approx(expected, abs=1e-12)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0003"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--dataset", "{missing}", "--out", "{tmp}/r"], "cannot load dataset"),
        (["train", "--dataset", "{export}", "--out", "{tmp}/r", "--set", "epochz=3"], "unknown config key 'epochz'"),
        (["train", "--dataset", "{export}", "--out", "{tmp}/r", "--set", "epochs=many"], "expects a int"),
        (["train", "--dataset", "{export}", "--out", "{tmp}/r", "--clip", "{tmp}/no-clip"], "cannot load CLIP"),
        (["predict", "--run", "{tmp}", "--dataset", "{export}", "--out", "{tmp}/r.json"], "not a finished training run"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(export_dir, tmp_path, args, message):
    fill = {"missing": str(tmp_path / "nope"), "tmp": str(tmp_path), "export": str(export_dir)}
    result = CliRunner().invoke(cli, [a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and message in result.output
    assert "Traceback" not in result.output


def test_model_selection_never_reads_test(export_dir):
    splits = load_export(str(export_dir))
    held = split_train(splits["train"], 0.1, 0)
    test_ids = set(splits["test"]["vehicle_id"])
    assert held.val.num_rows > 0 and not set(held.val["vehicle_id"]) & test_ids
    assert not set(held.fit["vehicle_id"]) & set(held.val["vehicle_id"])
