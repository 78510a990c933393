"""`t2iverw compare`: intervals per system, paired randomisation tests per pair, identity resampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from t2iverw.cli import cli
from t2iverw.evaluation.compare import System, compare_systems, holm
from t2iverw.evaluation.inputs import ground_truth
from t2iverw.evaluation.metrics import list_metrics


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["compare", *map(str, args)])
    return result.exit_code, result.output


def single_positive(name: str, ranks: list[int]) -> System:
    """A system whose queries each have one positive, found at these ranks (gallery of 10)."""
    n = len(ranks)
    return System(name, Path(name), list_metrics([[r] for r in ranks], np.ones(n), np.full(n, 10), 10), {})


def matrices(export_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(truth-first scores, random scores) over the test split."""
    truth = ground_truth(export_dir)
    perfect = (truth.query_labels[:, None] == truth.gallery_labels[None, :]).astype(np.float32)
    noise = np.random.default_rng(1).random(perfect.shape).astype(np.float32)
    return perfect, noise


def test_identical_systems_give_delta_zero_and_a_large_p(export_dir, tmp_path):
    _, noise = matrices(export_dir)
    np.save(tmp_path / "a.npy", noise)
    np.save(tmp_path / "b.npy", noise)
    code, out = run(export_dir, tmp_path / "a.npy", f"copy={tmp_path / 'b.npy'}", "--json", "--resamples", 500)
    assert code == 0, out
    result = json.loads(out)
    assert set(result["systems"]) == {"a", "copy"}
    assert result["systems"]["a"] == result["systems"]["copy"]
    assert {r["metric"] for r in result["pairs"]} == {"R1", "mAP"}
    for pair in result["pairs"]:
        assert pair["delta"] == 0.0 and pair["p"] >= 0.5 and pair["p_holm"] >= 0.5


def test_truth_first_beats_random_with_a_small_p(export_dir, tmp_path):
    perfect, noise = matrices(export_dir)
    np.save(tmp_path / "truth.npy", perfect)
    np.savez(tmp_path / "random.npz", scores=noise)
    code, out = run(export_dir, tmp_path / "truth.npy", tmp_path / "random.npz", "--unit", "query", "--json",
                    "--resamples", 2000)
    assert code == 0, out
    result = json.loads(out)
    assert result["systems"]["truth"]["mAP"] == 100.0
    lo, hi = result["systems"]["random"]["mAP_ci"]
    assert lo <= result["systems"]["random"]["mAP"] <= hi < 100.0
    by_metric = {r["metric"]: r for r in result["pairs"]}
    assert by_metric["mAP"]["delta"] > 0 and by_metric["mAP"]["p"] < 0.01
    assert by_metric["R1"]["p"] < 0.01
    # the table form names both systems and flags the significant pair
    code, text = run(export_dir, tmp_path / "truth.npy", tmp_path / "random.npz", "--unit", "query",
                     "--resamples", 200)
    assert code == 0 and "truth - random" in text and " *" in text


def test_three_queries_give_the_exact_randomisation_p():
    # A finds each query's single positive at ranks 1, 1, 2; B at 2, 4, 1.
    # AP:  A = 1, 1, 0.5   B = 0.5, 0.25, 1   differences d = +0.5, +0.75, -0.5, mean 0.25
    # the 8 sign patterns give sums  +++ 0.75  ++- 1.75  +-+ -0.75  +-- 0.25
    #                                -++ -0.25 -+- 0.75  --+ -1.75  --- -0.75
    # |sum| >= 0.75 for 6 of 8: p = 0.75.  R1 (first hit): d = +1, +1, -1, every |sum| >= 1: p = 1.
    a, b = single_positive("A", [1, 1, 2]), single_positive("B", [2, 4, 1])
    result = compare_systems([a, b], np.arange(3), resamples=1000, unit="query")
    by_metric = {r["metric"]: r for r in result["pairs"]}
    assert by_metric["mAP"]["exact"] and by_metric["mAP"]["p"] == 0.75
    assert by_metric["mAP"]["delta"] == pytest.approx(25.0)
    assert by_metric["R1"]["p"] == 1.0 and by_metric["R1"]["delta"] == pytest.approx(100 / 3)


def test_holm_correction():
    # sorted 0.01, 0.02, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 1 x 0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_identity_resampling_is_not_fooled_by_duplicated_captions():
    rng = np.random.default_rng(0)
    vehicles = 40
    a_ranks, b_ranks = rng.integers(1, 6, vehicles).tolist(), rng.integers(1, 6, vehicles).tolist()
    dup = 5  # every caption of each vehicle repeated: no new information
    width = {}
    for copies in (1, dup):
        systems = [single_positive("a", [r for r in a_ranks for _ in range(copies)]),
                   single_positive("b", [r for r in b_ranks for _ in range(copies)])]
        vehicle = np.repeat(np.arange(vehicles), copies)
        for unit, groups in (("identity", vehicle), ("query", np.arange(len(vehicle)))):
            result = compare_systems(systems, groups, resamples=2000, unit=unit, seed=3)
            lo, hi = result["systems"]["a"]["mAP_ci"]
            width[unit, copies] = hi - lo
    assert width["identity", dup] == pytest.approx(width["identity", 1], rel=1e-9)
    assert width["query", dup] < 0.6 * width["query", 1]  # about 1/sqrt(5) of it: overconfident


def test_systems_over_different_queries_are_refused(export_dir, tmp_path):
    truth = ground_truth(export_dir)
    full = {q: truth.gallery_ids for q in truth.query_ids}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ranks.json").write_text(json.dumps({"meta": {}, "ranks": full}))
    dropped = truth.query_ids[2]
    (tmp_path / "b.json").write_text(json.dumps({q: v for q, v in full.items() if q != dropped}))
    code, out = run(export_dir, tmp_path / "a", tmp_path / "b.json")
    assert code == 2
    assert out.count("\n") == 1 and out.startswith("Error: ") and repr(dropped) in out and "queries" in out
    swapped = {q: [*v[:-1], "not-an-image"] for q, v in full.items()}  # full rankings over another gallery
    (tmp_path / "c.json").write_text(json.dumps(swapped))
    code, out = run(export_dir, tmp_path / "a", tmp_path / "c.json")
    assert code == 2 and out.count("\n") == 1 and "gallery items" in out
    assert repr(truth.gallery_ids[-1]) in out and "'not-an-image'" in out
    top = {q: v[:3] for q, v in full.items()}  # top-3 lists of the same gallery are comparable
    (tmp_path / "top.json").write_text(json.dumps(top))
    code, out = run(export_dir, tmp_path / "a", tmp_path / "top.json", "--resamples", 50, "--json")
    assert code == 0, out
    code, out = run(export_dir, tmp_path / "a", tmp_path / "missing")
    assert code == 2 and out.startswith("Error: ") and "does not exist" in out
