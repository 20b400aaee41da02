"""inference/ranker.py on hand-made candidates: its features, its nDCG, that it learns which member to trust,
that the score the ensemble ranks with (member terms summed per item, the item term once) is the score it
was fitted on, and that blend files name their method."""

from __future__ import annotations

import numpy as np
import pytest

from evaluate.ndcg import ndcg
from inference import ranker
from inference.blend import BlendError, Candidates, load, save
from inference.ensemble import Ensemble

MANIFEST = {"files": {"vocab.json": {"sha256": "v1"}, "title.model": {"sha256": "t1"}}}


def test_member_features_are_the_normalised_score_its_root_the_reciprocal_rank_and_a_flag():
    items = np.array([[4, 2, -1]])
    scores = np.array([[0.8, 0.2, 0.0]])
    f = ranker.member_features(items, scores)
    np.testing.assert_allclose(f[0], [[1.0, 1.0, 1.0, 1.0], [0.25, 0.5, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]])


def test_artist_shares_are_the_fraction_of_given_songs_by_the_candidates_artists():
    # songs 0..4; song 3 has two artists (1 and 2), song 4 none
    artists = ranker.artists_table([[0], [1], [1], [1, 2], []])
    given = [[0, 1, 2, 3], []]  # question 0: artist 0 once, artist 1 three times, artist 2 once (of 4 songs)
    rows = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    items = np.array([[0, 1, 4, -1], [0, 1, 3, 4]])
    shares = ranker.artist_shares(rows, items, given, artists, chunk=1)
    np.testing.assert_allclose(shares, [[0.25, 0.75, 0.0, 0.0], [0, 0, 0, 0]])
    # song 3 sums its two artists: 0.75 + 0.25
    assert ranker.artist_shares(np.array([0]), np.array([3]), given, artists)[0] == pytest.approx(1.0)


def test_pool_ndcg_is_the_official_ndcg():
    a = Candidates(np.array([[7, 1, 3]]), np.array([[0.9, 0.5, 0.2]]), np.full((1, 1), -1), np.zeros((1, 1)))
    pool = ranker.Pool([a], "songs", [{3, 7}], np.array([2]), np.ones(8))  # its rows: items 1, 3, 7
    assert pool.ndcg(np.array([2.0, 1.0, 3.0]), np.array([0]))[0] == pytest.approx(ndcg([3, 7], [7, 1, 3]))
    assert pool.ndcg(np.array([0.0, 2.0, 1.0]), np.array([0]))[0] == pytest.approx(ndcg([3, 7], [3, 7, 1]))


def noisy_member(truth, rng, noise, n, k):
    items, scores = np.zeros((len(truth), k), dtype=int), np.zeros((len(truth), k))
    for q, answers in enumerate(truth):
        s = rng.random(n) * noise
        s[list(answers)] += 1.0
        top = np.argsort(-s)[:k]
        items[q], scores[q] = top, np.exp(s[top])
    return Candidates(items, scores, items[:, :5], scores[:, :5])


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    q, n = 120, 200
    truth = [set(rng.choice(n, 8, replace=False).tolist()) for _ in range(q)]
    candidates = {"good": noisy_member(truth, rng, 1.5, n, 30), "bad": noisy_member(truth, rng, 30.0, n, 30)}
    types = ["songs-only"] * 60 + ["tags-only"] * 60
    given = [[int(i)] for i in rng.integers(0, n, q)]
    artists = ranker.artists_table([[i % 7] for i in range(n)])
    args = (candidates, {"songs": truth, "tags": truth}, {"songs": np.full(q, 8), "tags": np.full(q, 8)}, types,
            {"songs": rng.random(n) * 10, "tags": np.ones(n)}, rng.integers(100, 200, q), rng.integers(0, 100, n),
            given, artists)
    return args, ranker.fit(*args)


def test_the_fit_trusts_the_member_that_is_right_and_ranks_better_than_it_does_alone(fitted):
    (candidates, truth, sizes, types, *_), out = fitted
    w = out["weights"]["songs"]["songs-only"]["members"]
    assert w["good"][0] + w["good"][1] > 5 * abs(w["bad"][0] + w["bad"][1])
    good_alone = np.mean([ndcg(sorted(truth["songs"][i]), candidates["good"].song_items[i].tolist())
                          for i in range(len(types))])
    cv = np.mean([out["tuning"][t]["songs"]["cv"] for t in ("songs-only", "tags-only")])
    assert cv >= good_alone - 1e-9 and out["lambda"]["songs"] in ranker.LAMBDAS
    assert set(out["tuning"]) >= {"songs-only", "tags-only"} and out["tuning"]["songs-only"]["songs"]["n"] == 60


def test_the_ensembles_split_score_is_the_score_the_ranker_was_fitted_on(fitted):
    (candidates, truth, sizes, types, counts, days, release, given, artists), out = fitted
    kind = "songs"
    pool = ranker.Pool(list(candidates.values()), kind, truth[kind], sizes[kind], counts[kind], days, release, given,
                       artists)
    weights = out["weights"][kind]
    expected = np.array([np.concatenate([*(weights[types[r]]["members"][m] for m in candidates),
                                         weights[types[r]]["item"]]) @ pool.features[i]
                         for i, r in enumerate(pool.rows)])
    # as inference/ensemble.py does it: the members side by side, their terms summed per item, the item term once
    items = np.concatenate([c.song_items for c in candidates.values()], axis=1)
    rows = np.broadcast_to(np.arange(len(types))[:, None], items.shape)
    features = ranker.item_features(items, counts[kind], ranker.ages(items, days, release),
                                    ranker.artist_shares(rows, items, given, artists))
    values, bonus = ranker.blended(weights, types, {m: (c.song_items, c.song_scores) for m, c in candidates.items()},
                                   features)
    chosen, chosen_scores = Ensemble._rank(items, values, np.zeros((len(types), 200), dtype=bool), 10, bonus)
    for q in (0, 1, 61):
        mine = pool.rows == q
        best = np.argsort(-expected[mine], kind="stable")[:10]
        np.testing.assert_allclose(chosen_scores[q], expected[mine][best], rtol=1e-4, atol=1e-5)


def test_rank_adds_an_items_bonus_once_however_many_members_propose_it():
    items = np.array([[3, 1, 3, 3]])
    scores = np.array([[0.1, 0.25, 0.1, 0.1]])
    bonus = np.array([[0.5, 0.1, 0.5, 0.5]])  # per item: the same wherever it stands
    chosen, chosen_scores = Ensemble._rank(items, scores, np.zeros((1, 5), dtype=bool), 2, bonus)
    assert chosen.tolist() == [[3, 1]]
    np.testing.assert_allclose(chosen_scores, [[0.8, 0.35]])


def test_blend_files_name_their_method_and_a_ranker_file_needs_its_weights(tmp_path):
    path = tmp_path / "blend.json"
    save(path, {"method": "ranker", "ranker": {"weights": {}, "lambda": {}}, "tuning": {}}, MANIFEST,
         ["dae", "popular"], {})
    assert load(path, MANIFEST, ["dae", "popular"])["method"] == "ranker"
    save(path, {"method": "ranker", "tuning": {}}, MANIFEST, ["dae", "popular"], {})
    with pytest.raises(BlendError, match="no ranker weights"):
        load(path, MANIFEST, ["dae", "popular"])
    save(path, {"weights": {}, "tuning": {}}, MANIFEST, ["dae", "popular"], {})  # an older file: the grid blend
    assert load(path, MANIFEST, ["dae", "popular"])["method"] == "grid"


def test_a_member_that_misleads_the_other_half_is_left_out_and_the_others_kept():
    """``flip`` ranks the answers first on every other question and the non-answers first on the rest, so
    whatever one half teaches about it is wrong on the other: its absence raises the cross-validated nDCG,
    and the fit leaves it out (weights 0). The good member stays."""
    rng = np.random.default_rng(1)
    q, n = 80, 150
    truth = [set(rng.choice(n, 8, replace=False).tolist()) for _ in range(q)]
    good = noisy_member(truth, rng, 2.0, n, 30)
    flipped = [t if i % 2 else set(rng.choice(sorted(set(range(n)) - t), 8, replace=False).tolist())
               for i, t in enumerate(truth)]
    flip = noisy_member(flipped, rng, 0.1, n, 30)
    types = ["songs-only"] * q
    out = ranker.fit({"good": good, "flip": flip}, {"songs": truth, "tags": truth},
                     {"songs": np.full(q, 8), "tags": np.full(q, 8)}, types, {"songs": np.ones(n), "tags": np.ones(n)},
                     np.zeros(q, dtype=int), np.zeros(n, dtype=int), [[] for _ in range(q)],
                     ranker.artists_table([[0]] * n))
    assert out["dropped"]["songs"] == ["flip"]
    weights = out["weights"]["songs"]["songs-only"]["members"]
    assert weights["flip"] == [0.0] * 4 and any(weights["good"])


def test_the_design_without_its_zeros_multiplies_as_the_dense_matrix():
    rng = np.random.default_rng(3)
    features, row_type = rng.random((50, 6)).astype(np.float32), rng.integers(0, 3, 50)
    design = ranker.Design(features, row_type, 3)
    dense = np.concatenate([features] + [features * (row_type == j)[:, None] for j in range(3)], axis=1)
    assert design.shape == dense.shape and np.array_equal(design.dense(), dense)
    w, r = rng.normal(size=24), rng.normal(size=50).astype(np.float32)
    assert np.allclose(design @ w, dense @ w, atol=1e-5)
    assert np.allclose(design.transposed_times(r), dense.T @ r, atol=1e-5)
    rows = rng.random(50) < 0.5
    assert np.array_equal(design[rows].dense(), dense[rows])
