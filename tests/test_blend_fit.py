"""inference/blend.py on hand-made candidates: the fit picks the member that is right on each question type,
never does worse than the best member alone on the tuning questions, and blend files are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data.task import ndcg
from inference.blend import MIN_QUESTIONS, BlendError, Candidates, Pool, fit, load, normalised, save, simplex

MANIFEST = {"files": {"vocab.json": {"sha256": "v1"}, "title.model": {"sha256": "t1"},
                       "release_dates.npz": {"sha256": "r1"}}}


def member(song_rows, tag_rows):
    """Candidates from per-question lists of (item, score)."""
    def arrays(rows, k):
        items, scores = np.full((len(rows), k), -1), np.zeros((len(rows), k))
        for i, row in enumerate(rows):
            for j, (item, score) in enumerate(row):
                items[i, j], scores[i, j] = item, score
        return items, scores
    return Candidates(*arrays(song_rows, 4), *arrays(tag_rows, 4))


def test_simplex_and_normalised():
    points = simplex(3, 4)
    assert len(points) == 15 and np.allclose(points.sum(axis=1), 1.0)
    np.testing.assert_allclose(normalised(np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])), [[1, 0.5, 0], [0, 0, 0]])


def test_pool_ndcg_is_the_official_ndcg():
    # one question: answer songs {3, 7}; member A ranks 7, 1, 3; member B ranks 3 only
    a = member([[(7, 0.9), (1, 0.5), (3, 0.2)]], [[]])
    b = member([[(3, 1.0)]], [[]])
    pool = Pool([a, b], "songs", [{3, 7}], np.array([2]))
    assert pool.ndcg(np.array([1.0, 0.0]), np.array([0])) == pytest.approx(ndcg([3, 7], [7, 1, 3]))
    # blend 0.5/0.5: 3 -> 0.5 * 0.2/0.9 + 0.5 * 1 = 0.611, 7 -> 0.5, 1 -> 0.278: [3, 7, 1]
    assert pool.ndcg(np.array([0.5, 0.5]), np.array([0])) == pytest.approx(ndcg([3, 7], [3, 7, 1]))


def test_fit_weighs_each_type_by_the_member_that_is_right_there():
    n = MIN_QUESTIONS
    types = ["songs-only"] * n + ["title-only"] * n
    # the answer of every question is song 2 and tag 6; "good_songs" knows the song on songs-only questions
    # and is wrong on title-only ones, where "good_titles" is right (a tie ranks the smaller index first, so
    # the right member must outweigh the other)
    good_songs = member([[(2, 0.9), (1, 0.1)]] * n + [[(1, 0.9), (2, 0.1)]] * n, [[(5, 1.0), (6, 0.5)]] * (2 * n))
    good_titles = member([[(1, 0.9), (2, 0.1)]] * n + [[(2, 0.9), (1, 0.1)]] * n, [[(6, 1.0), (5, 0.5)]] * (2 * n))
    truth = {"songs": [{2}] * (2 * n), "tags": [{6}] * (2 * n)}
    sizes = {"songs": np.ones(2 * n, int), "tags": np.ones(2 * n, int)}
    fitted = fit({"a": good_songs, "b": good_titles}, truth, sizes, types)
    w = fitted["weights"]
    assert w["songs-only"]["a"][0] > w["songs-only"]["b"][0]  # songs: a on songs-only ...
    assert w["title-only"]["b"][0] > w["title-only"]["a"][0]  # ... b on title-only
    assert w["songs-only"]["b"][1] > w["songs-only"]["a"][1]  # tags: b everywhere
    for t in ("songs-only", "title-only"):
        for kind in ("songs", "tags"):
            cell = fitted["tuning"][t][kind]
            assert cell["blend"] == pytest.approx(1.0)
            assert cell["blend"] >= max(cell["alone"].values()) - 1e-12


def test_a_type_with_few_questions_takes_the_weights_fitted_on_all():
    n = MIN_QUESTIONS
    types = ["songs-only"] * n + ["tags-only"] * 2
    a = member([[(1, 1.0)]] * (n + 2), [[(5, 1.0)]] * (n + 2))
    b = member([[(2, 1.0)]] * (n + 2), [[(6, 1.0)]] * (n + 2))
    truth = {"songs": [{1}] * n + [{2}] * 2, "tags": [{5}] * (n + 2)}
    sizes = {"songs": np.ones(n + 2, int), "tags": np.ones(n + 2, int)}
    fitted = fit({"a": a, "b": b}, truth, sizes, types)
    assert fitted["weights"]["tags-only"] == fitted["weights"]["empty"]  # both from all the questions
    w = fitted["weights"]["tags-only"]
    assert w["a"][0] >= w["b"][0]  # a is right on most of them (a tie ranks song 1 first)
    assert "tags-only" not in fitted["tuning"] or "alone" not in fitted["tuning"]["tags-only"]["songs"]


def test_blend_files_are_refused_for_another_work_directory_or_other_members(tmp_path):
    path = tmp_path / "blend.json"
    save(path, {"weights": {"songs-only": {"dae": [1.0, 1.0]}}, "tuning": {}}, MANIFEST, ["dae", "popular"],
         {"method": "grid"})
    # the file is plain UTF-8 JSON (no pickle): the work directory's identity, the members, the fit and extra
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "workdir": {"vocab.json": "v1", "title.model": "t1", "release_dates.npz": "r1"}, "members": ["dae", "popular"],
        "weights": {"songs-only": {"dae": [1.0, 1.0]}}, "tuning": {}, "method": "grid"}
    assert load(path, MANIFEST, ["popular", "dae"])["weights"]["songs-only"]["dae"] == [1.0, 1.0]
    for name in ("vocab.json", "release_dates.npz"):  # any file of the work directory's identity
        other = {"files": {**MANIFEST["files"], name: {"sha256": "x2"}}}
        with pytest.raises(BlendError, match="another work directory"):
            load(path, other, ["dae", "popular"])
    older = json.loads(path.read_text(encoding="utf-8"))  # a file written before release dates were recorded
    del older["workdir"]["release_dates.npz"]
    path.write_text(json.dumps(older), encoding="utf-8")
    assert load(path, MANIFEST, ["popular", "dae"])["method"] == "grid"
    del older["workdir"]["vocab.json"]  # but never without the vocabulary's
    path.write_text(json.dumps(older), encoding="utf-8")
    with pytest.raises(BlendError, match="another work directory"):
        load(path, MANIFEST, ["dae", "popular"])
    save(path, {"weights": {"songs-only": {"dae": [1.0, 1.0]}}, "tuning": {}}, MANIFEST, ["dae", "popular"],
         {"method": "grid"})
    with pytest.raises(BlendError, match="members"):
        load(path, MANIFEST, ["dae", "title", "popular"])
    with pytest.raises(BlendError, match=r"fitted with no member\(s\) answering by popularity, but here \['dae'\]"):
        load(path, MANIFEST, ["dae", "popular"], weak=["dae"])  # the DAE fell back to popularity since the fit
    save(path, {"weights": {}, "tuning": {}}, MANIFEST, ["dae", "popular"], {"method": "grid", "weak": ["dae"]})
    assert load(path, MANIFEST, ["dae", "popular"], weak=["dae"])["method"] == "grid"
    with pytest.raises(BlendError, match=r"fitted with \['dae'\] member\(s\) answering by popularity, but here none"):
        load(path, MANIFEST, ["dae", "popular"])
    path.write_text("{not json")
    with pytest.raises(BlendError, match="cannot read"):
        load(path, MANIFEST, ["dae", "popular"])


def test_fit_chooses_the_power_that_ranks_an_item_both_members_like_first():
    """Each member's own top item is wrong, the answer (song 3) is both members' second at 0.36 of their
    top: weights alone cannot lift it above a top item (0.36 < 0.5), the square root can (0.6 > 0.5)."""
    n = MIN_QUESTIONS
    a = member([[(1, 1.0), (3, 0.36)]] * n, [[(5, 1.0)]] * n)
    b = member([[(2, 1.0), (3, 0.36)]] * n, [[(5, 1.0)]] * n)
    truth = {"songs": [{3}] * n, "tags": [{5}] * n}
    sizes = {"songs": np.ones(n, int), "tags": np.ones(n, int)}
    fitted = fit({"a": a, "b": b}, truth, sizes, ["songs-only"] * n)
    assert fitted["power"]["songs"] == 0.5 and fitted["tuning"]["songs-only"]["songs"]["blend"] == pytest.approx(1.0)
    assert fitted["power"]["tags"] == 1.0  # a tie keeps the first power tried
    assert fit({"a": a, "b": b}, truth, sizes, ["songs-only"] * n, powers=(1.0,))["tuning"]["songs-only"]["songs"][
        "blend"] < 0.7


def test_with_six_members_the_local_search_finds_what_the_whole_grid_finds(monkeypatch):
    """Six members at steps 10 (3,003 grid points): the coarse grid plus local search, against every point."""
    from inference import blend

    rng = np.random.default_rng(3)
    questions, items = 60, 40
    truth = [set(rng.choice(items, 6, replace=False).tolist()) for _ in range(questions)]
    members = []
    for quality in (0.9, 0.6, 0.4, 0.3, 0.2, 0.1):  # how much each member's scores know of the answers
        items_, scores = np.zeros((questions, items), int), np.zeros((questions, items))
        for q in range(questions):
            signal = np.array([1.0 if i in truth[q] else 0.0 for i in range(items)])
            value = quality * signal + rng.random(items)
            order = np.argsort(-value)
            items_[q], scores[q] = order, value[order]
        members.append(Candidates(items_, scores, items_[:, :4], scores[:, :4]))
    pool = Pool(members, "songs", truth, np.full(questions, 6))
    names, rows = [f"m{i}" for i in range(6)], np.arange(questions)
    local, _ = blend._best(pool, names, rows, 10)
    monkeypatch.setattr(blend, "EXHAUSTIVE", 10_000)
    full, _ = blend._best(pool, names, rows, 10)
    assert np.isclose(local.sum(), 1.0) and (local >= 0).all() and np.allclose(local * 10, np.round(local * 10))
    assert pool.ndcg(local, rows) == pytest.approx(pool.ndcg(full, rows), abs=1e-9)
    assert pool.ndcg(local, rows) > max(pool.ndcg(np.eye(6)[m], rows) for m in range(6))
