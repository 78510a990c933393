"""`t2iverw eval` end to end on an export (and a build) of the synthetic sample, good and bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.runner import open_log
from t2iverw.cli import cli
from t2iverw.evaluation import evaluate, evaluate_predictions
from t2iverw.evaluation.inputs import ground_truth


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["eval", *map(str, args)])
    return result.exit_code, result.output


def order(dataset: Path, direction: str = "t2i") -> dict:
    code, out = run(dataset, "--print-order", "--direction", direction)
    assert code == 0, out
    return json.loads(out)


def vehicle(export_dir: Path) -> dict[str, str]:
    truth = ground_truth(export_dir)
    return dict(zip(truth.gallery_ids, truth.gallery_labels.tolist()))


def test_export_and_build_give_the_same_sorted_order(export_dir, captioned_build):
    got = order(export_dir)
    assert got == order(captioned_build)
    assert got["gallery"] == sorted(got["gallery"]) and len(got["gallery"]) > 10
    assert got["queries"] == got["gallery"]  # every test image has its caption; caption id == image id


def test_perfect_scores_and_json_output(export_dir, tmp_path):
    ids, vid = order(export_dir), vehicle(export_dir)
    scores = np.array([[float(vid[q] == vid[g]) for g in ids["gallery"]] for q in ids["queries"]], np.float32)
    np.save(tmp_path / "s.npy", scores)
    code, out = run(export_dir, "--scores", tmp_path / "s.npy", "--json")
    assert code == 0, out
    metrics = json.loads(out.splitlines()[-1])
    assert {k: metrics[k] for k in ("R1", "R5", "R10", "mAP", "mINP")} == dict.fromkeys(("R1", "R5", "R10", "mAP", "mINP"), 100.0)
    assert metrics["queries"] == len(ids["queries"]) and metrics["at_k"] is None


def test_scores_ranks_npz_and_explicit_order_agree(export_dir, tmp_path):
    ids = order(export_dir)
    scores = np.random.default_rng(0).integers(0, 3, (len(ids["queries"]), len(ids["gallery"]))).astype(np.float64)
    np.savez(tmp_path / "s.npz", scores=scores)
    direct = evaluate_predictions(export_dir, scores=tmp_path / "s.npz").metrics
    labels = ground_truth(export_dir)
    assert direct == evaluate(scores, labels.query_labels, labels.gallery_labels) | {"direction": "t2i"}
    # a full ranking that follows the tie rule (stable sort) gives the same numbers
    ranks = {q: [ids["gallery"][j] for j in np.argsort(-row, kind="stable")] for q, row in zip(ids["queries"], scores)}
    (tmp_path / "ranks.json").write_text(json.dumps(ranks))
    assert evaluate_predictions(export_dir, ranks=tmp_path / "ranks.json").metrics == direct
    # the same matrix with rows and columns reversed, and the order given by id files
    (tmp_path / "q.txt").write_text("\n".join(ids["queries"][::-1]))
    (tmp_path / "g.txt").write_text("\n".join(ids["gallery"][::-1]))
    np.save(tmp_path / "r.npy", scores[::-1, ::-1])
    reversed_ = evaluate_predictions(export_dir, scores=tmp_path / "r.npy", query_ids=tmp_path / "q.txt",
                                     gallery_ids=tmp_path / "g.txt").metrics
    assert reversed_["mAP"] == pytest.approx(evaluate(
        scores[::-1, ::-1], labels.query_labels[::-1], labels.gallery_labels[::-1])["mAP"])


def test_top_k_ranks_are_reported_at_k(export_dir, tmp_path):
    ids, vid = order(export_dir), vehicle(export_dir)
    ranks = {}
    for q in ids["queries"]:
        negative = next(g for g in ids["gallery"] if vid[g] != vid[q])
        ranks[q] = [negative, q]  # its own image, a positive, second
    (tmp_path / "ranks.json").write_text(json.dumps(ranks))
    code, out = run(export_dir, "--pred", tmp_path / "ranks.json")
    assert code == 0, out
    assert "mAP@2" in out and "mINP@2" in out and "top-2" in out
    m = evaluate_predictions(export_dir, ranks=ranks).metrics
    n_pos = [sum(vid[g] == vid[q] for g in ids["gallery"]) for q in ids["queries"]]
    assert (m["R1"], m["R5"], m["at_k"]) == (0.0, 100.0, 2)
    assert m["mAP"] == pytest.approx(100 * np.mean([0.5 / n for n in n_pos]))
    assert m["mINP"] == pytest.approx(100 * np.mean([n == 1 for n in n_pos]))


def test_per_query_csv_and_seeded_ci(export_dir, tmp_path):
    ids = order(export_dir)
    np.save(tmp_path / "s.npy", np.random.default_rng(1).standard_normal((len(ids["queries"]), len(ids["gallery"]))))
    out_csv = tmp_path / "sub" / "per_query.csv"
    code, out = run(export_dir, "--scores", tmp_path / "s.npy", "--ci", 95, "--per-query", out_csv, "--json")
    assert code == 0, out
    metrics = json.loads(out.splitlines()[-1])
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["query_id"] for r in rows] == ids["queries"]
    assert np.mean([float(r["ap"]) for r in rows]) * 100 == pytest.approx(metrics["mAP"], abs=1e-4)
    assert np.mean([r["first_rank"] == "1" for r in rows]) * 100 == pytest.approx(metrics["R1"])
    assert sorted(p.name for p in out_csv.parent.iterdir()) == ["per_query.csv"]  # no temp file left
    for key in ("R1", "mAP", "mINP"):
        lo, hi = metrics["ci"][key]
        assert lo <= metrics[key] <= hi and lo < hi
    again = json.loads(run(export_dir, "--scores", tmp_path / "s.npy", "--ci", 95, "--json")[1].splitlines()[-1])
    other = json.loads(run(export_dir, "--scores", tmp_path / "s.npy", "--ci", 95, "--seed", 1, "--json")[1].splitlines()[-1])
    assert again["ci"] == metrics["ci"] != other["ci"]
    code, table = run(export_dir, "--scores", tmp_path / "s.npy", "--ci", 90)
    assert code == 0 and "90% CI" in table and "mINP" in table


def test_i2t_direction(export_dir, tmp_path):
    ids = order(export_dir, "i2t")
    vid = vehicle(export_dir)
    scores = np.array([[float(vid[q] == vid[g]) for g in ids["gallery"]] for q in ids["queries"]])
    np.save(tmp_path / "s.npy", scores)
    m = evaluate_predictions(export_dir, scores=tmp_path / "s.npy", direction="i2t").metrics
    assert m["direction"] == "i2t" and m["mAP"] == 100.0


# --- bad input: one line, exit 2, naming the problem and the first offending id -----------------
@pytest.fixture
def base(export_dir, tmp_path) -> dict:
    ids = order(export_dir)
    return {"ids": ids, "ranks": {q: list(ids["gallery"]) for q in ids["queries"]}, "tmp": tmp_path}


def bad_ranks(base, mutate) -> Path:
    ranks = base["ranks"]
    mutate(ranks)
    path = base["tmp"] / "ranks.json"
    path.write_text(json.dumps(ranks))
    return path


def assert_one_line_error(code: int, out: str, *needles: str) -> None:
    assert code == 2, out
    lines = [line for line in out.splitlines() if line.strip() and not line.startswith("eval:")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    assert "Traceback" not in out
    for needle in needles:
        assert needle in lines[0], out


def test_malformed_json(export_dir, base):
    path = base["tmp"] / "ranks.json"
    path.write_text('{"000001": ["000002",]}')
    assert_one_line_error(*run(export_dir, "--pred", path), "not valid JSON", "line 1")
    path.write_text('"000001"')
    assert_one_line_error(*run(export_dir, "--pred", path), "must be a JSON object", "or a list of rankings")
    path.write_text('[["000001"]]')
    assert_one_line_error(*run(export_dir, "--pred", path), "list of rankings", "--query-ids")
    first = base["ids"]["queries"][0]
    path.write_text(json.dumps(base["ranks"] | {first: "000002"}))
    assert_one_line_error(*run(export_dir, "--pred", path), repr(first), "must be a list")


def test_missing_extra_unknown_and_duplicate_ranks(export_dir, base):
    first, second = base["ids"]["queries"][:2]
    cases = [
        (lambda r: r.pop(second), ["no ranking", repr(second)]),
        (lambda r: r.__setitem__("999999", []), ["'999999'", "not a test query"]),
        (lambda r: r[first].insert(0, "nope"), [repr(first), "'nope'", "not a test gallery id"]),
        (lambda r: r[first].append(r[first][3]), [repr(first), "more than once"]),
    ]
    for mutate, needles in cases:
        base["ranks"] = {q: list(base["ids"]["gallery"]) for q in base["ids"]["queries"]}
        assert_one_line_error(*run(export_dir, "--pred", bad_ranks(base, mutate)), *needles)


def test_a_query_ranked_twice_is_named(export_dir, base):
    """json keeps the last of a repeated key: without a check the first ranking vanishes silently."""
    queries, gallery = base["ids"]["queries"], base["ids"]["gallery"]
    body = ",".join(f"{json.dumps(q)}:{json.dumps(list(gallery))}" for q in [queries[0], *queries])
    path = base["tmp"] / "twice.json"
    path.write_text('{"meta":{},"ranks":{' + body + "}}")
    assert_one_line_error(*run(export_dir, "--pred", path), "twice", repr(queries[0]))


def test_bad_score_matrices(export_dir, base):
    q, g = len(base["ids"]["queries"]), len(base["ids"]["gallery"])
    tmp = base["tmp"]
    np.save(tmp / "wrong.npy", np.zeros((q, g - 1)))
    assert_one_line_error(*run(export_dir, "--scores", tmp / "wrong.npy"), "shape", f"({q}, {g - 1})")
    nan = np.zeros((q, g))
    nan[3, 5] = np.nan
    np.save(tmp / "nan.npy", nan)
    assert_one_line_error(*run(export_dir, "--scores", tmp / "nan.npy"), "NaN", repr(base["ids"]["queries"][3]))
    inf = np.zeros((q, g))
    inf[2, 1] = -np.inf  # invisible to a max-based NaN check; ties with any other infinity
    np.save(tmp / "inf.npy", inf)
    assert_one_line_error(*run(export_dir, "--scores", tmp / "inf.npy"), "infinite", repr(base["ids"]["queries"][2]))
    inf[2, 1], inf[4, 0] = 0, np.inf  # +inf: a top score no finite one can tie or beat
    np.save(tmp / "plus_inf.npy", inf)
    assert_one_line_error(*run(export_dir, "--scores", tmp / "plus_inf.npy"), "infinite", repr(base["ids"]["queries"][4]))
    # a .npz is read by another branch of the loader (np.load of an archive, not a memory map): the same checks
    np.savez_compressed(tmp / "nan.npz", scores=nan.astype(np.float32), meta=np.array(json.dumps({"model": "m"})))
    assert_one_line_error(*run(export_dir, "--scores", tmp / "nan.npz"), "NaN", repr(base["ids"]["queries"][3]))
    np.savez(tmp / "inf.npz", inf)  # one unnamed array (arr_0), +inf in row 4
    assert_one_line_error(*run(export_dir, "--scores", tmp / "inf.npz"), "infinite", repr(base["ids"]["queries"][4]))
    inf[4, 0] = -np.inf
    np.savez(tmp / "minus_inf.npz", scores=inf)
    assert_one_line_error(*run(export_dir, "--scores", tmp / "minus_inf.npz"), "infinite", repr(base["ids"]["queries"][4]))
    np.save(tmp / "objects.npy", np.array([[{"a": 1}] * g] * q, dtype=object))
    assert_one_line_error(*run(export_dir, "--scores", tmp / "objects.npy"), "cannot load scores")
    (tmp / "q.txt").write_text("\n".join(base["ids"]["queries"][1:]))
    np.save(tmp / "ok.npy", np.zeros((q, g)))
    assert_one_line_error(*run(export_dir, "--scores", tmp / "ok.npy", "--query-ids", tmp / "q.txt"),
                          "misses", repr(base["ids"]["queries"][0]))
    assert_one_line_error(*run(export_dir), "nothing to evaluate")


def test_query_without_positive(captioned_build, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(captioned_build, build)
    bd = BuildDir(build)
    test_vehicle = bd.split()["test_ids"][0]
    images = bd.images(["image_id", "vehicle_id"]).to_pylist()
    with open_log(bd, "captions", "main", source="model", settings={"model": "metadata words"}) as log:
        # the caption stage failed on every image of one test vehicle
        log.append({"image_id": r["image_id"], "status": "failed", "reason": "timeout"}
                   for r in images if r["vehicle_id"] == test_vehicle)
    first = min(r["image_id"] for r in images if r["vehicle_id"] == test_vehicle)
    assert_one_line_error(*run(build, "--print-order", "--direction", "i2t"), repr(first), "no positive")


def test_dataset_without_test_split(export_dir, captioned_build, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(export_dir, export)
    for path in (export / "data").glob("test-*.parquet"):
        path.unlink()
    assert_one_line_error(*run(export, "--print-order"), "no test split")
    build = tmp_path / "build"
    shutil.copytree(captioned_build, build)
    (build / "split.json").unlink()
    assert_one_line_error(*run(build, "--print-order"), "split")
    assert_one_line_error(*run(tmp_path, "--print-order"), "neither an export")


def test_ids_of_the_wrong_type_and_a_ranking_longer_than_the_gallery(export_dir, base):
    first = base["ids"]["queries"][0]
    gallery = list(base["ids"]["gallery"])
    cases = [
        (lambda r: r[first].__setitem__(0, 7), [repr(first), "integer indices", "--gallery-ids"]),  # ints are indices
        (lambda r: r[first].__setitem__(0, None), [repr(first), "None"]),
        (lambda r: r[first].__setitem__(0, [gallery[0]]), [repr(first)]),
        (lambda r: r[first].__setitem__(0, {"id": gallery[0]}), [repr(first)]),
        (lambda r: r[first].extend(gallery), [repr(first), "more than once"]),  # twice the gallery's length
    ]
    for mutate, needles in cases:
        base["ranks"] = {q: list(gallery) for q in base["ids"]["queries"]}
        assert_one_line_error(*run(export_dir, "--pred", bad_ranks(base, mutate)), *needles)
