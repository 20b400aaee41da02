"""The shared losses (models/losses.py) on examples worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from models.losses import bce, hide_given, multi_hot, ranking_bce, recommendation_loss, softmax_xent


def sigmoid_xent(z: float, y: float) -> float:
    return -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z))))


def test_multi_hot_skips_padding_and_counts_each_id_once():
    out = multi_hot(tf.constant([[2, 0, -1], [-1, -1, -1]]), 4).numpy()
    np.testing.assert_array_equal(out, [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_softmax_xent_is_the_mean_negative_log_probability_of_each_rows_targets():
    logits = tf.constant([[0.0, math.log(3.0), 0.0], [1.0, 1.0, 1.0], [5.0, 0.0, 0.0]])
    targets = tf.constant([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # row 0: p = (1/5, 3/5, 1/5), targets 0 and 1 -> -(log 1/5 + log 3/5) / 2; row 1: -log 1/3; row 2: no
    # targets, counts 0 in the mean over the 3 rows
    expected = (-(math.log(1 / 5) + math.log(3 / 5)) / 2 + math.log(3)) / 3
    assert float(softmax_xent(logits, targets)) == pytest.approx(expected, rel=1e-6)


def test_bce_is_the_mean_over_every_entry():
    logits, targets = [[0.0, 2.0], [-1.0, 3.0]], [[1.0, 0.0], [0.0, 1.0]]
    expected = np.mean([sigmoid_xent(z, y) for zs, ys in zip(logits, targets) for z, y in zip(zs, ys)])
    assert float(bce(tf.constant(logits), tf.constant(targets))) == pytest.approx(expected, rel=1e-6)


def test_ranking_bce_scores_only_each_rows_top_k():
    logits = tf.constant([[4.0, -2.0, 1.0, 0.5]])
    targets = tf.constant([[0.0, 1.0, 1.0, 0.0]])
    # the top 2 are entries 0 (4.0, not a target) and 2 (1.0, a target); entry 1's target is not seen
    expected = (sigmoid_xent(4.0, 0.0) + sigmoid_xent(1.0, 1.0)) / 2
    assert float(ranking_bce(logits, targets, k=2)) == pytest.approx(expected, rel=1e-6)


def test_recommendation_loss_weighs_tags_and_adds_the_ranking_term():
    songs = tf.constant([[0.0, math.log(3.0), 0.0]])
    tags = tf.constant([[0.0, 0.0]])
    song_ids, tag_ids = tf.constant([[1, -1]]), tf.constant([[0]])
    total, parts = recommendation_loss(songs, tags, song_ids, tag_ids, "softmax", tag_weight=0.5)
    assert float(parts["songs"]) == pytest.approx(-math.log(3 / 5), rel=1e-6)
    assert float(parts["tags"]) == pytest.approx(math.log(2), rel=1e-6)
    assert float(total) == pytest.approx(-math.log(3 / 5) + 0.5 * math.log(2), rel=1e-6)
    ranked, parts = recommendation_loss(songs, tags, song_ids, tag_ids, "softmax", 0.5, rank_weight=2.0)
    assert float(ranked) == pytest.approx(float(total) + 2.0 * float(parts["ranking"]), rel=1e-6)
    assert float(parts["ranking"]) == pytest.approx(
        (sigmoid_xent(math.log(3.0), 1.0) + 2 * sigmoid_xent(0.0, 0.0)) / 3, rel=1e-6)  # k=100 > 3 songs: all


def test_hide_given_takes_the_given_items_out_of_a_softmax():
    logits = hide_given(tf.zeros([1, 4]), tf.constant([[1, -1]]))
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), [[1 / 3, 0, 1 / 3, 1 / 3]], atol=1e-7)
