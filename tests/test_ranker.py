"""inference/ranker.py on hand-made candidates: its features, its nDCG, that it learns which member to trust,
that the score the ensemble ranks with (member terms summed per item, the item term once) is the score it
was fitted on, that blend files name their method, its listwise gradient against central differences, its
lambda choice on data where the right one is known, a question type without tuning questions, and empty
input."""

from __future__ import annotations

import numpy as np
import pytest

from data.task import ndcg
from inference import ranker
from inference.blend import BlendError, Candidates, load, save
from inference.ensemble import Ensemble

MANIFEST = {"files": {"vocab.json": {"sha256": "v1"}, "title.model": {"sha256": "t1"},
                       "release_dates.npz": {"sha256": "r1"}}}


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
    chosen, chosen_scores = Ensemble._sum_rank_fill(items, values, np.zeros((len(types), 200), dtype=bool), 10, bonus)
    for q in (0, 1, 61):
        mine = pool.rows == q
        best = np.argsort(-expected[mine], kind="stable")[:10]
        np.testing.assert_allclose(chosen_scores[q], expected[mine][best], rtol=1e-4, atol=1e-5)


def test_rank_adds_an_items_bonus_once_however_many_members_propose_it():
    items = np.array([[3, 1, 3, 3]])
    scores = np.array([[0.1, 0.25, 0.1, 0.1]])
    bonus = np.array([[0.5, 0.1, 0.5, 0.5]])  # per item: the same wherever it stands
    chosen, chosen_scores = Ensemble._sum_rank_fill(items, scores, np.zeros((1, 5), dtype=bool), 2, bonus)
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


def test_the_listwise_gradient_is_the_central_difference_of_its_loss():
    """_objective on a small random float64 problem (the Design computes in its features' dtype): two question
    types, questions of 1 to 6 candidates with one or two answers and one without any (left out of the loss),
    a column not fitted, lam > 0. Its loss is -mean_{answers} log softmax(z) per answered question, averaged,
    + lam |v|^2 (computed here question by question from the dense matrix), and its gradient is the loss's
    central difference."""
    rng = np.random.default_rng(5)
    answers = [[0, 2], [0], [4], [], [1, 3], [1]]  # per question: the positions of its answers
    sizes = [3, 1, 6, 4, 5, 2]
    rows = np.repeat(np.arange(len(sizes)), sizes)
    relevant = np.concatenate([np.isin(np.arange(n), a) for n, a in zip(sizes, answers)])
    question_type = np.array([0, 1, 0, 1, 1, 0])
    design = ranker.Design(rng.normal(size=(len(rows), 4)), question_type[rows], 2)
    fitted = np.ones(12, dtype=bool)
    fitted[5] = False  # the first type's offset of feature 1: held at 0
    lam = 0.3
    loss, questions = ranker._objective(design, rows, relevant, lam, fitted)
    assert questions == 5
    v = rng.normal(size=11)
    value, grad = loss(v)

    w = np.zeros(12)
    w[fitted] = v
    z = design.dense() @ w
    per_question = [np.log(np.exp(z[rows == q]).sum()) - z[rows == q][a].mean()
                    for q, a in enumerate(answers) if a]
    assert value == pytest.approx(np.mean(per_question) + lam * v @ v, rel=1e-12)
    h = 1e-6
    step = np.eye(len(v)) * h
    numeric = [(loss(v + step[i])[0] - loss(v - step[i])[0]) / (2 * h) for i in range(len(v))]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def planted(flip: bool, q: int = 40, k: int = 10, seed: int = 0) -> tuple:
    """fit's arguments for ``q`` songs-only questions of ``k`` candidates each (question i's own songs
    i k .. i k + k - 1, the first two its answers), proposed in a random order by one member with equal
    scores (its features: noise). Two item features tell the answers: the log count is 0.1 on the answers
    and 0 elsewhere (with ``flip``: so on the odd questions, the other way round on the even ones: 0 on the
    answers, 0.1 elsewhere), and the log age, ten times larger and overlapping, is U(0.4, 2) on the answers
    and U(0, 1.6) elsewhere. No tag is proposed."""
    rng = np.random.default_rng(seed)
    items = np.arange(q * k).reshape(q, k)
    answer = items % k < 2
    counted = answer == ((items // k) % 2 == 1) if flip else answer
    log_age = np.where(answer, rng.uniform(0.4, 2.0, answer.shape), rng.uniform(0.0, 1.6, answer.shape))
    member = Candidates(np.array([rng.permutation(row) for row in items]), np.ones((q, k)), np.full((q, 1), -1),
                        np.zeros((q, 1)))
    return ({"m": member}, {"songs": [set(row[:2].tolist()) for row in items], "tags": [set()] * q},
            {"songs": np.full(q, 2), "tags": np.zeros(q, dtype=int)}, ["songs-only"] * q,
            {"songs": np.where(counted, np.expm1(1.0), 0.0).reshape(-1), "tags": np.ones(1)}, np.zeros(q),
            -np.expm1(10 * log_age).reshape(-1), [[] for _ in range(q)], ranker.artists_table([[0]] * (q * k)))


def fit_seeing_each_lambda(monkeypatch, args, lambdas):
    """ranker.fit(*args, lambdas), and the songs' mean cross-validated nDCG of each lambda it tried."""
    seen, real = {}, ranker._cross_validated

    def spy(design, pool, halves, lam, columns=None, starts=None):
        scored = real(design, pool, halves, lam, columns, starts)
        if pool.cutoff == 100 and columns is None:
            seen[lam] = scored[0].mean()
        return scored

    monkeypatch.setattr(ranker, "_cross_validated", spy)
    return ranker.fit(*args, lambdas=lambdas), seen


LAMBDA_GRID = (1e2, 1e-3, 1e-4)  # not sorted: the choice must not hang on the grid's order


def test_a_weak_penalty_is_chosen_when_a_small_feature_separates_the_answers(monkeypatch):
    """The log count separates every question's answers; the log age, ten times larger, does not. A strong
    penalty leaves the weights near -gradient(0) / (2 lam), the features' mean differences, where the age
    term dwarfs the count term (scale squared): ranked by age, the nDCG stays below 1. A weak one lets the
    separating feature's weight grow until it ranks every answer first: nDCG 1. Both weak lambdas rank
    perfectly, a tie that goes to the smaller."""
    out, cv = fit_seeing_each_lambda(monkeypatch, planted(flip=False), LAMBDA_GRID)
    assert cv[1e-4] == cv[1e-3] == pytest.approx(1.0) and cv[1e2] < 0.9
    assert out["lambda"]["songs"] == 1e-4
    assert out["tuning"]["songs-only"]["songs"]["cv"] == pytest.approx(1.0)


def test_a_strong_penalty_is_chosen_when_the_separating_feature_flips_between_the_halves(monkeypatch):
    """The log count separates the answers in each cross-validation half, but the other way round in the
    other half (questions alternate): a weak penalty ranks by it and puts the held-out half's two answers
    last of ten, nDCG (1/ln 10 + 1/ln 11) / (1/ln 2 + 1/ln 3). A strong one ranks by the mean differences,
    where the log age, consistent in both halves, dominates: better, so it is chosen."""
    out, cv = fit_seeing_each_lambda(monkeypatch, planted(flip=True), LAMBDA_GRID)
    last = (1 / np.log(10) + 1 / np.log(11)) / (1 / np.log(2) + 1 / np.log(3))
    assert cv[1e-4] == pytest.approx(last, rel=1e-6) and cv[1e2] > last + 0.2
    assert out["lambda"]["songs"] == 1e2
    assert out["tuning"]["songs-only"]["songs"]["cv"] == pytest.approx(cv[1e2])


def test_a_question_type_without_tuning_questions_takes_the_shared_weights():
    """Tuning questions of one type only. That type's weights are the shared ones plus its offsets, and the
    loss depends on their sum alone, so the equal penalty on both splits it evenly: shared = offsets = half
    the type's weights. The types without a tuning question take the shared weights, half the fitted type's,
    and have no row in the tuning table; blended scores their questions with them."""
    out = ranker.fit(*planted(flip=False), lambdas=(1e-2,))
    weights = out["weights"]["songs"]
    fitted = weights["songs-only"]
    assert any(fitted["members"]["m"]) and any(fitted["item"])
    for t in ("songs+tags", "tags-only", "title-only", "empty"):
        np.testing.assert_allclose(weights[t]["members"]["m"], np.array(fitted["members"]["m"]) / 2, rtol=1e-6)
        np.testing.assert_allclose(weights[t]["item"], np.array(fitted["item"]) / 2, rtol=1e-6)
        assert out["tuning"][t] == {}
    items, scores = np.array([[3, 1, 2], [3, 1, 2]]), np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]])
    feats = np.ones((2, 3, 3), dtype=np.float32)
    values, bonus = ranker.blended(weights, ["songs-only", "title-only"], {"m": (items, scores)}, feats)
    np.testing.assert_allclose(values[1], values[0] / 2, rtol=1e-5)
    np.testing.assert_allclose(bonus[1], bonus[0] / 2, rtol=1e-5)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no 0 / 0 on the way: nothing to fit is not fitted
def test_no_tuning_question_is_an_error_and_questions_without_candidates_get_weights_0():
    """Zero tuning questions: ValueError (no weight can be fitted), not an error from deep inside. Questions
    whose member proposes nothing (zero rows): every weight 0, without running the optimiser on an empty
    loss, and every lambda scoring nDCG 0 (the tie: the smallest). blended on zero questions: empty terms."""
    empty = Candidates(np.zeros((0, 5), dtype=int), np.zeros((0, 5)), np.zeros((0, 5), dtype=int), np.zeros((0, 5)))
    args = ({"m": empty}, {"songs": [], "tags": []}, {"songs": np.zeros(0, dtype=int), "tags": np.zeros(0, dtype=int)},
            [], {"songs": np.ones(10), "tags": np.ones(10)}, np.zeros(0), np.zeros(10), [],
            ranker.artists_table([[0]] * 10))
    with pytest.raises(ValueError, match="at least one tuning question"):
        ranker.fit(*args)

    q = 4
    nothing = Candidates(np.full((q, 5), -1), np.zeros((q, 5)), np.full((q, 5), -1), np.zeros((q, 5)))
    out = ranker.fit({"m": nothing}, {"songs": [{1}] * q, "tags": [{1}] * q},
                     {"songs": np.ones(q, dtype=int), "tags": np.ones(q, dtype=int)}, ["songs-only", "tags-only"] * 2,
                     {"songs": np.ones(10), "tags": np.ones(10)}, np.zeros(q), np.zeros(10), [[] for _ in range(q)],
                     ranker.artists_table([[0]] * 10))
    for kind in ("songs", "tags"):
        assert out["lambda"][kind] == min(ranker.LAMBDAS) and out["dropped"][kind] == []
        for t, w in out["weights"][kind].items():
            assert w == {"members": {"m": [0.0] * 4}, "item": [0.0] * 3}, (kind, t)
        assert out["tuning"]["songs-only"][kind] == {"n": 2, "ranker": 0.0, "cv": 0.0}

    values, bonus = ranker.blended(out["weights"]["songs"], [], {"m": (np.zeros((0, 5), dtype=int), np.zeros((0, 5)))},
                                   np.zeros((0, 5, 3), dtype=np.float32))
    assert values.shape == (0, 5) and bonus.shape == (0, 5)
