"""A trained model never answers below popularity: the trainers' Validator scores popularity's answers to
the same tuning questions beside the model's (``popularity_score``), a model below it is named at the end of
training and in inference popularity answers in its place (models/export.py ``below_popularity``,
inference/ensemble.py). The whole path, trained members included, is tests/test_quickstart.py's quality
floor."""

from __future__ import annotations

import numpy as np
import pytest

from models.export import below_popularity


def _validator(work, logits_of):
    import tensorflow as tf

    from hvd_train.common import Validator

    def predict(batch):
        rows = int(batch["id"].shape[0])
        songs, tags = logits_of(rows, n_songs, n_tags)
        return tf.constant(songs), tf.constant(tags)

    validator = Validator(work, 0, 1, 64, predict)
    n_songs, n_tags = len(validator.song_ids), len(validator.tags)
    return validator


def test_a_model_ranking_by_count_scores_popularity_and_a_reversed_one_is_below_it(hvd_one_rank, workdirs):
    by_count = _validator(workdirs[0], lambda rows, s, t: (np.tile(-np.arange(s, dtype=np.float32), (rows, 1)),
                                                          np.tile(-np.arange(t, dtype=np.float32), (rows, 1))))
    scores, results = by_count.gather_and_score(hvd_one_rank)
    assert results and scores["popularity_score"] > 0
    assert scores["score"] == pytest.approx(scores["popularity_score"], abs=1e-9)
    assert below_popularity({"validation": scores}) is None
    again, _ = by_count.gather_and_score(hvd_one_rank)  # popularity is scored once, then carried along
    assert again["popularity_score"] == scores["popularity_score"]

    reversed_ = _validator(workdirs[0], lambda rows, s, t: (np.tile(np.arange(s, dtype=np.float32), (rows, 1)),
                                                           np.tile(np.arange(t, dtype=np.float32), (rows, 1))))
    weak, _ = reversed_.gather_and_score(hvd_one_rank)
    assert weak["score"] < 0.5 * weak["popularity_score"]
    assert weak["popularity_score"] == pytest.approx(scores["popularity_score"], abs=1e-12)
    reason = below_popularity({"validation": weak})
    assert reason and f"{weak['popularity_score']:.4f}" in reason


def test_below_popularity_reads_an_exports_validation_only_when_both_scores_are_there():
    assert below_popularity({}) is None and below_popularity({"validation": {"score": 0.1}}) is None
    assert below_popularity({"validation": {"score": 0.2, "popularity_score": 0.2}}) is None
    assert "0.1000 is below popularity's 0.2000" in below_popularity({"validation": {"score": 0.1,
                                                                                     "popularity_score": 0.2}})


def test_a_question_with_fewer_allowed_songs_than_100_still_gets_100_songs_and_10_tags(hvd_one_rank, workdirs):
    """Scores that allow nothing (NaN everywhere): every answer is filled up with the most frequent songs and
    tags, as the official evaluator requires exactly 100 and 10, and validation scores instead of failing."""
    nothing = _validator(workdirs[0], lambda rows, s, t: (np.full((rows, s), np.nan, np.float32),
                                                         np.full((rows, t), np.nan, np.float32)))
    scores, results = nothing.gather_and_score(hvd_one_rank)
    assert results and all(len(r["songs"]) == 100 == len(set(r["songs"])) and len(r["tags"]) == 10 for r in results)
    assert 0.0 <= scores["score"] <= scores["popularity_score"] + 0.05


def test_filled_keeps_the_chosen_indices_and_adds_the_first_others():
    from hvd_train.common import _filled

    assert _filled(np.array([4, 0, -1, -1]), 10).tolist() == [4, 0, 1, 2]
    assert _filled(np.array([3, 1, 2]), 10).tolist() == [3, 1, 2]
    assert _filled(np.array([-1, -1]), 10).tolist() == [0, 1]
