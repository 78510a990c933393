"""`t2iverw eval` inputs: the dataset either way, ranks.json as a list in a given order, integer
gallery indices, the wrapped form with `meta`, and a score file's `meta`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from t2iverw.build import BuildDir
from t2iverw.cli import cli
from t2iverw.runner import open_log
from t2iverw.evaluation import evaluate_predictions
from t2iverw.evaluation.inputs import ground_truth
from t2iverw.schema import query_id


def run(*args: object):
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def one_error_line(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], result.output


@pytest.fixture
def ranked(export_dir, tmp_path):
    """A full ranking of every query (gallery reversed, so the numbers are not trivially perfect)."""
    truth = ground_truth(export_dir)
    ranks = {q: list(reversed(truth.gallery_ids)) for q in truth.query_ids}
    return truth, ranks, evaluate_predictions(export_dir, ranks=ranks).metrics


def test_dataset_positional_or_option(export_dir, ranked, tmp_path):
    _, ranks, metrics = ranked
    (tmp_path / "r.json").write_text(json.dumps(ranks))
    by_position = run(export_dir, "--pred", tmp_path / "r.json", "--json")
    by_option = run("--dataset", export_dir, "--pred", tmp_path / "r.json", "--json")
    assert by_position.exit_code == by_option.exit_code == 0, by_option.output
    assert json.loads(by_position.output) == json.loads(by_option.output) == metrics
    assert run(export_dir, "--dataset", export_dir, "--pred", tmp_path / "r.json").exit_code == 0
    one_error_line(run("--pred", tmp_path / "r.json"), "--pred", "needs the dataset", "--dataset")
    one_error_line(run(export_dir, "--dataset", tmp_path, "--pred", tmp_path / "r.json"), "two datasets")


def test_list_of_rankings_in_query_id_order_with_gallery_indices(export_dir, ranked, tmp_path):
    truth, ranks, metrics = ranked
    order = list(reversed(truth.query_ids))  # any order: the file says which query each list ranks
    (tmp_path / "q.txt").write_text("\n".join(order) + "\n")
    (tmp_path / "as_ids.json").write_text(json.dumps([ranks[q] for q in order]))
    got = evaluate_predictions(export_dir, ranks=tmp_path / "as_ids.json", query_ids=tmp_path / "q.txt")
    assert got.metrics == metrics
    gallery = truth.gallery_ids[1:] + truth.gallery_ids[:1]  # an authors'-style gallery order
    (tmp_path / "g.txt").write_text("\n".join(gallery) + "\n")
    index = {g: i for i, g in enumerate(gallery)}
    (tmp_path / "as_index.json").write_text(json.dumps([[index[g] for g in ranks[q]] for q in order]))
    result = run(export_dir, "--pred", tmp_path / "as_index.json", "--query-ids", tmp_path / "q.txt",
                 "--gallery-ids", tmp_path / "g.txt", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == metrics


def test_bad_lists_of_rankings(export_dir, ranked, tmp_path):
    truth, ranks, _ = ranked
    q = tmp_path / "q.txt"
    q.write_text("\n".join(truth.query_ids))
    path = tmp_path / "r.json"
    path.write_text(json.dumps([ranks[x] for x in truth.query_ids][:-1]))
    one_error_line(run(export_dir, "--pred", path, "--query-ids", q), f"{len(truth.query_ids) - 1} rankings",
                   f"{len(truth.query_ids)} queries")
    path.write_text(json.dumps([list(range(len(truth.gallery_ids)))] * len(truth.query_ids)))
    one_error_line(run(export_dir, "--pred", path, "--query-ids", q), "integer indices", "--gallery-ids")
    g = tmp_path / "g.txt"
    g.write_text("\n".join(truth.gallery_ids))
    path.write_text(json.dumps([[0, len(truth.gallery_ids)]] * len(truth.query_ids)))
    one_error_line(run(export_dir, "--pred", path, "--query-ids", q, "--gallery-ids", g),
                   f"index {len(truth.gallery_ids)}", "outside --gallery-ids")
    path.write_text(json.dumps(ranks))
    one_error_line(run(export_dir, "--pred", path, "--query-ids", q), "names its queries")
    q.write_text("\n".join([truth.query_ids[0]] + truth.query_ids[:-1]))
    path.write_text(json.dumps([ranks[x] for x in truth.query_ids]))
    one_error_line(run(export_dir, "--pred", path, "--query-ids", q), repr(truth.query_ids[0]), "twice")


def test_wrapped_ranks_and_npz_meta_warn_when_selected_on_test(export_dir, ranked, tmp_path):
    truth, ranks, metrics = ranked
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": {"selected_on_test": False, "run": "x"}, "ranks": ranks}))
    clean = run(export_dir, "--pred", path, "--json")
    assert clean.exit_code == 0 and clean.stderr == "" and json.loads(clean.stdout) == metrics
    path.write_text(json.dumps({"meta": {"selected_on_test": True}, "ranks": ranks}))
    flagged = run(export_dir, "--pred", path, "--json")
    assert flagged.exit_code == 0, flagged.output
    assert json.loads(flagged.stdout) == metrics | {"selected_on_test": True}
    warning = flagged.stderr.strip().splitlines()
    assert len(warning) == 1 and "this model was selected on the test split" in warning[0]

    scores = np.random.default_rng(0).random((len(truth.query_ids), len(truth.gallery_ids)))
    np.savez(tmp_path / "s.npz", scores=scores, meta=np.array(json.dumps({"selected_on_test": True})))
    table = run(export_dir, "--scores", tmp_path / "s.npz")
    assert table.exit_code == 0 and "selected on the test split" in table.stderr and "R1" in table.stdout
    np.savez(tmp_path / "unnamed.npz", scores, meta=np.array(json.dumps({})))  # the one array besides meta
    result = evaluate_predictions(export_dir, scores=tmp_path / "unnamed.npz")
    assert "selected_on_test" not in result.metrics and not result.selected_on_test
    np.savez(tmp_path / "bad.npz", scores=scores, meta=np.array([1, 2]))
    one_error_line(run(export_dir, "--scores", tmp_path / "bad.npz"), "'meta' must be a 0-d string array")


def test_every_caption_is_a_query(captioned_build, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(captioned_build, build)
    before = ground_truth(build)
    bd = BuildDir(build)
    first = before.query_ids[0]
    with open_log(bd, "captions", "import", source="release", settings={"release": "test"}) as log:
        log.append([{"image_id": first, "caption_id": first, "status": "ok", "text": "a", "texts": ["a", "b", "c"]}])
    after = ground_truth(build)
    extra = [query_id(first, 1), query_id(first, 2)]
    assert sorted(after.query_ids) == sorted(before.query_ids + extra)
    label = dict(zip(after.query_ids, after.query_labels.tolist()))
    assert {label[q] for q in extra} == {label[first]}

    from t2iverw.evaluation.baselines import colour_word_scores
    from t2iverw.export import export_dataset

    export_dataset(build, tmp_path / "export")
    exported = ground_truth(tmp_path / "export")
    assert exported.query_ids == after.query_ids and exported.gallery_ids == after.gallery_ids
    assert np.array_equal(exported.query_labels, after.query_labels)
    for dataset in (build, tmp_path / "export"):  # the colour baseline reads every caption's text
        assert colour_word_scores(dataset).shape == (len(after.query_ids), len(after.gallery_ids))


def test_query_ids_follow_the_schema_rule():
    assert [query_id("42", k) for k in range(3)] == ["42", "42#1", "42#2"]


def test_caption_counts_follow_caption_list():
    """An export row holds its `captions` when it lists any, else its one `caption` (none when null)."""
    import pyarrow as pa

    from t2iverw.evaluation.inputs import caption_counts

    caption = ["a", None, "", "b", None, "c"]
    captions = pa.array([None, None, [], ["x", "y"], ["z"], []], pa.list_(pa.string()))
    both = pa.RecordBatch.from_pydict({"caption": caption, "captions": captions})
    assert caption_counts(both).to_pylist() == [1, 0, 1, 2, 1, 1]
    older = pa.RecordBatch.from_pydict({"caption": caption})  # an export before the `captions` column
    assert caption_counts(older).to_pylist() == [1, 0, 1, 1, 0, 1]
