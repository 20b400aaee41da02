"""The ensemble's arithmetic on hand-made scores: blend weights, candidate merging, filters, exact 100/10."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from inference.ensemble import Ensemble, blend_weights
from inference.members import propose


def test_blend_weights_follow_the_formula():
    dae_songs, title_songs, dae_tags, title_tags = blend_weights(np.array([0, 1, 3]), 0.85, 0.8)
    np.testing.assert_allclose(dae_songs, [0.0, 1 / 1.85, 3 / 3.85])
    np.testing.assert_allclose(title_songs, [1.0, 0.85 / 1.85, 0.85 / 3.85])  # nothing given: the title model alone
    np.testing.assert_allclose(dae_tags, [1, 1, 1])
    np.testing.assert_allclose(title_tags, [0.8, 0.8, 0.8])


def test_an_item_proposed_by_both_models_gets_the_sum_and_the_order_follows_the_blend():
    # one question, vocabulary of 6; the DAE proposes items 4 (0.5) and 2 (0.3); the title model 2 (0.4) and 5 (0.6)
    dae_w, title_w = 0.7, 0.3
    items = np.array([[4, 2, 2, 5]])
    scores = np.array([[0.5 * dae_w, 0.3 * dae_w, 0.4 * title_w, 0.6 * title_w]])
    chosen, chosen_scores = Ensemble._sum_rank_fill(items, scores, np.zeros((1, 6), dtype=bool), 3)
    # 4: 0.35; 2: 0.21 + 0.12 = 0.33; 5: 0.18
    assert chosen.tolist() == [[4, 2, 5]]
    np.testing.assert_allclose(chosen_scores, [[0.35, 0.33, 0.18]])


def test_an_item_proposed_by_many_members_gets_the_sum_of_all_their_scores():
    # four members; item 3 proposed by all four (0.1 each, 0.4 in all), item 1 by one (0.35), item 2 by two
    items = np.array([[3, 1, 3, 2, 3, 2, 3, -1]])
    scores = np.array([[0.1, 0.35, 0.1, 0.15, 0.1, 0.15, 0.1, 0.0]])
    chosen, chosen_scores = Ensemble._sum_rank_fill(items, scores, np.zeros((1, 5), dtype=bool), 3)
    assert chosen.tolist() == [[3, 1, 2]]
    np.testing.assert_allclose(chosen_scores, [[0.4, 0.35, 0.3]])


def test_short_candidate_lists_are_filled_by_popularity_without_blocked_or_repeated_items():
    blocked = np.zeros((2, 8), dtype=bool)
    blocked[0, [0, 3]] = True  # given or released later
    items = np.array([[5, -1], [-1, -1]])  # question 0: one candidate; question 1 (cold start): none
    chosen, chosen_scores = Ensemble._sum_rank_fill(items, np.array([[0.9, 0.0], [0.0, 0.0]]), blocked, 4)
    assert chosen.tolist() == [[5, 1, 2, 4], [0, 1, 2, 3]]  # vocabulary order = popularity order
    assert chosen_scores.tolist() == [[0.9, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    for row in chosen:
        assert len(set(row.tolist())) == 4


def test_rows_with_too_few_unblocked_items_are_marked():
    blocked = np.ones((1, 5), dtype=bool)
    blocked[0, 2] = False
    chosen, _ = Ensemble._sum_rank_fill(np.array([[-1]]), np.array([[0.0]]), blocked, 3)
    assert chosen.tolist() == [[2, -1, -1]]


def test_proposals_skip_blocked_items_and_mark_missing_ones():
    p = tf.constant([[0.1, 0.5, 0.2, 0.15, 0.05]])
    blocked = np.array([[False, True, False, True, True]])
    top, values = propose(p, blocked, 4)
    assert top.tolist() == [[2, 0, -1, -1]]
    np.testing.assert_allclose(values, [[0.2, 0.1, 0.0, 0.0]])


@pytest.mark.parametrize("n", [0, 2, 50])
def test_song_weights_sum_to_one(n):
    dae_songs, title_songs, _, _ = blend_weights(np.array([n]), 0.85, 0.8)
    if n:
        assert dae_songs[0] + title_songs[0] == pytest.approx(1.0)
    else:
        assert title_songs[0] == 1.0 and dae_songs[0] == 0.0
