"""The no-learning baselines: colour words read from captions, colours read from pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from t2iverw.cli import cli
from t2iverw.errors import T2IError
from t2iverw.evaluation import evaluate_predictions
from t2iverw.evaluation.baselines import caption_colours, colour_word_scores, dominant_colour, random_scores


def test_caption_colours_reads_every_colour_word():
    got = caption_colours("A dark Blue SUV with a grey roof, reddish trim.")
    assert [tuple(c) for c in got] == [(128.0, 128.0, 128.0), (0.0, 0.0, 255.0)]  # grey, blue; 'reddish' is no word
    assert caption_colours("A vehicle seen by a camera.") == []


def test_dominant_colour_is_the_vehicle_not_the_border():
    image = Image.new("RGB", (120, 80), (20, 200, 20))
    image.paste((200, 10, 10), (25, 15, 95, 65))  # a red body covering the centre
    assert np.allclose(dominant_colour(image), (200, 10, 10))


def test_colour_baseline_beats_chance_on_the_sample(export_dir, captioned_build):
    colour = evaluate_predictions(export_dir, scores=colour_word_scores(export_dir)).metrics
    chance = evaluate_predictions(export_dir, scores=random_scores(export_dir)).metrics
    assert colour["mAP"] > chance["mAP"] + 10
    assert np.array_equal(colour_word_scores(captioned_build), colour_word_scores(export_dir))


def test_cli_baseline_and_annotations_only_export(export_dir, captioned_build, tmp_path):
    from t2iverw.export import export_dataset

    result = CliRunner().invoke(cli, ["eval", str(export_dir), "--baseline", "colour-words", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["mAP"] == evaluate_predictions(export_dir, scores=colour_word_scores(export_dir)).metrics["mAP"]
    export_dataset(captioned_build, tmp_path / "bare", include_images=False)
    with pytest.raises(T2IError, match="annotations-only"):
        colour_word_scores(tmp_path / "bare")


def test_baseline_rows_are_made_per_block_and_equal_the_whole_matrix(export_dir):
    from t2iverw.evaluation.inputs import ground_truth
    from t2iverw.evaluation.metrics import score_metrics

    truth = ground_truth(export_dir)
    for scores in (random_scores(export_dir, seed=3), colour_word_scores(export_dir)):
        whole = np.asarray(scores)
        assert whole.shape == (len(truth.query_ids), len(truth.gallery_ids))
        assert np.array_equal(np.concatenate([scores[0:3], scores[3:]]), whole)  # a row never depends on its block
        blocked = score_metrics(scores, truth.query_labels, truth.gallery_labels, chunk_size=2)
        at_once = score_metrics(whole, truth.query_labels, truth.gallery_labels)
        assert np.array_equal(blocked.ap, at_once.ap) and np.array_equal(blocked.first_rank, at_once.first_rank)
    assert not np.array_equal(np.asarray(random_scores(export_dir, seed=3)), np.asarray(random_scores(export_dir, seed=4)))
