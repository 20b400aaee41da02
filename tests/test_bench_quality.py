"""bench.peers and bench.quality: the peers on a handmade example whose answer is obvious, item_cf's and
playlist_cf's scores against the same scores computed by hand from the example's playlists, the relations a
bench.quality summary's figures must keep (on the committed small results, and edited copies of them), its
ratios and their Markdown on a handmade results set (a type whose best peer scored 0, types some systems
lack), and the whole benchmark at tiny scale (slow: it trains the tiny models through launch/quickstart.sh)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from bench.peers import DEFAULTS, PEERS, als, ease, genre_popular, item_cf, playlist_cf, popular
from data.vocab import release_dates, updt_day
from data.ndcg import check_results

from conftest import REPO

# ------------------------------------------------------------------------------------ handmade example
#
# 130 songs: 0-9 ballads (GN0100), 10-19 dance (GN0200), the rest rock (GN0300). Song 3 comes out in
# December 2020, after the questions' update date (January 2020). Five training playlists: two ballad
# playlists sharing songs 0, 1, 2 and tag "a"; two dance playlists sharing 10, 11, 12 and tag "x"; one
# rock playlist of popular songs 20-29 with many tags.

DAY, LATER = "2020-01-01 00:00:00.000", "2021-01-01 00:00:00.000"


def meta():
    songs = []
    for s in range(130):
        genre = "GN0100" if s < 10 else "GN0200" if s < 20 else "GN0300"
        songs.append({"id": s, "album_id": s, "album_name": "", "artist_id_basket": [s], "artist_name_basket": ["x"],
                      "song_name": "", "song_gn_gnr_basket": [genre], "song_gn_dtl_gnr_basket": [genre[:4] + "01"],
                      "issue_date": "20201201" if s == 3 else "20000101"})
    return songs


def playlist(pid, songs, tags, title="", date="2019-06-01 00:00:00.000"):
    return {"id": pid, "plylst_title": title, "songs": songs, "tags": tags, "like_cnt": 0, "updt_date": date}


TRAIN = [
    playlist(1, [0, 1, 2, 3], ["a", "b"], "rainy day ballad", date=LATER),
    playlist(2, [0, 1, 2, 4], ["a", "c"], "sad ballad"),
    playlist(3, [10, 11, 12, 13], ["x", "y"], "dance party"),
    playlist(4, [10, 11, 12, 14], ["x", "z"], "gym dance"),
    playlist(5, list(range(20, 30)) + [10], ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"], "rock hits"),
    playlist(6, list(range(20, 30)), ["t1", "t2", "t3"], "rock hits 2"),
]
Q_BALLAD = playlist(101, [0, 1], [], "", date=DAY)
Q_DANCE = playlist(102, [10, 11], [], "", date=DAY)
Q_DANCE_TAG = playlist(103, [], ["x"], "", date=DAY)
Q_TITLE = playlist(104, [], [], "Rainy!! Day", date=DAY)
QUESTIONS = [Q_BALLAD, Q_DANCE, Q_DANCE_TAG, Q_TITLE]


def by_id(results):
    return {r["id"]: r for r in results}


def assert_valid(results, questions, song_meta, train):
    """The official checks, and the ensemble's filters: nothing given, nothing released after the date."""
    check_results([{"id": q["id"], "songs": [0], "tags": ["a"]} for q in questions], results)
    release = release_dates(song_meta, train + questions)
    results = by_id(results)
    for q in questions:
        r, day = results[q["id"]], updt_day(q["updt_date"])
        assert not set(r["songs"]) & set(q["songs"]), f"question {q['id']}: a given song recommended"
        assert not set(r["tags"]) & set(q["tags"]), f"question {q['id']}: a given tag recommended"
        future = [s for s in r["songs"] if release[s] > day]
        assert not future, f"question {q['id']}: songs {future} released after {q['updt_date']}"


@pytest.mark.parametrize("name", sorted(PEERS))
def test_every_peer_is_valid_and_filtered_on_the_example(name):
    song_meta = meta()
    results = PEERS[name](TRAIN, QUESTIONS, song_meta)
    assert [r["id"] for r in results] == [q["id"] for q in QUESTIONS]
    assert_valid(results, QUESTIONS, song_meta, TRAIN)


def test_item_cf_recommends_the_neighbours_and_drops_the_future_song():
    results = by_id(item_cf(TRAIN, QUESTIONS, meta()))
    ballad = results[101]["songs"]
    # 2 sits with both given songs in both ballad playlists; 4 with them once; 3 too, but is not out yet
    assert ballad[:2] == [2, 4] and 3 not in ballad
    assert results[101]["tags"][0] == "a" and set(results[101]["tags"][1:3]) == {"b", "c"}
    dance = results[102]["songs"]
    assert dance[0] == 12 and set(dance[1:3]) == {13, 14}
    assert results[102]["tags"][0] == "x"
    # a tags-only question: the songs of the playlists holding its tag
    assert set(results[103]["songs"][:5]) == {10, 11, 12, 13, 14}
    # a title-only question: its keywords "rainy" and "day" lead to playlist 1 (song 3 still filtered)
    assert set(results[104]["songs"][:3]) == {0, 1, 2} and results[104]["tags"][:2] in (["a", "b"], ["b", "a"])


def test_item_cf_without_the_popularity_correction_still_ranks_the_neighbours_first():
    results = by_id(item_cf(TRAIN, QUESTIONS, meta(), alpha=2.0, beta=0.0, title_weight=1.0))
    assert results[101]["songs"][:2] == [2, 4]


# What a peer scores, recomputed here from the raw playlists with sets and the formulas of bench/peers.py's
# docstring, never from the peer's own matrices. Title keywords are taken as the title's lower-cased runs of
# letters and digits, which is what data.title.normalise_title leaves of these ASCII titles.
Q_MIXED = playlist(105, [10], [], "Rainy party", date=DAY)  # songs and a title: the title weight applies


def keywords(p):
    return set(re.findall(r"[a-z0-9]+", p["plylst_title"].lower()))


def holders(playlists):
    """(kind, item) -> the indices of the playlists holding it; kind s(ong), t(ag) or w(ord)."""
    held = defaultdict(set)
    for i, p in enumerate(playlists):
        for s in p["songs"]:
            held["s", s].add(i)
        for t in p["tags"]:
            held["t", t].add(i)
        for w in keywords(p):
            held["w", w].add(i)
    return held


def captured_scores(monkeypatch):
    """Every score matrix a peer hands to bench.peers._top_positive (songs, then tags, per batch)."""
    import bench.peers

    seen, real = [], bench.peers._top_positive

    def spy(scores, blocked, k):
        seen.append(np.array(scores, dtype=np.float64))
        return real(scores, blocked, k)

    monkeypatch.setattr(bench.peers, "_top_positive", spy)
    return seen


@pytest.mark.parametrize("setting", [{"alpha": 1.0, "beta": 0.5, "title_weight": 0.5},   # the (Q X^T) X route
                                     {"alpha": 2.0, "beta": 0.0, "title_weight": 2.0},   # the similarity rows
                                     {"alpha": 0.5, "beta": 0.25, "title_weight": 1.0}])
def test_item_cf_scores_are_the_cosine_sums_computed_from_the_playlists(monkeypatch, setting):
    """score(q, j) = n_j ** beta * sum_i w_i cos(i, j) ** alpha, with cos(i, j) = |P_i & P_j| / sqrt(|P_i| |P_j|)
    over the training playlists and the questions' given items (bench/peers.py's docstring)."""
    from bench.peers import ItemCF

    questions = QUESTIONS + [Q_MIXED]
    model = ItemCF(TRAIN, questions, meta())
    seen = captured_scores(monkeypatch)
    model.recommend(questions, [setting])
    songs, tags = seen
    held = holders(TRAIN + questions)
    alpha, beta, weight = setting["alpha"], setting["beta"], setting["title_weight"]

    def expected(q, target):
        inputs = [(("s", s), 1.0) for s in q["songs"]] + [(("t", t), 1.0) for t in q["tags"]]
        w = weight if inputs else 1.0  # a title-only question: its keywords weigh 1
        inputs += [(("w", k), w) for k in keywords(q)]
        total = 0.0
        for item, wi in inputs:
            shared = len(held[item] & held[target])
            if shared:
                total += wi * (shared / math.sqrt(len(held[item]) * len(held[target]))) ** alpha
        return total * len(held[target]) ** beta

    song_ids, tag_names = model.items.songs.tolist(), model.items.tags
    assert sorted(song_ids) == sorted({s for p in TRAIN + questions for s in p["songs"]})
    for r, q in enumerate(questions):
        np.testing.assert_allclose(songs[r], [expected(q, ("s", s)) for s in song_ids], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tags[r], [expected(q, ("t", t)) for t in tag_names], rtol=1e-5, atol=1e-6)
    if setting["alpha"] == 1.0:
        # by hand: songs 0 and 1 are each in playlists 1, 2 and the ballad question; 2 is in 1 and 2; 4 in 2 only
        assert songs[0][song_ids.index(2)] == pytest.approx(2 * 2 / math.sqrt(3 * 2) * 2 ** 0.5, rel=1e-5)
        assert songs[0][song_ids.index(4)] == pytest.approx(2 * 1 / math.sqrt(3 * 1), rel=1e-5)
        assert songs[0][song_ids.index(20)] == 0.0  # a rock song never sits with a ballad


def test_top_positive_is_the_brute_force_ranking_with_ties_by_column():
    import numpy as np

    from bench.peers import _top_positive

    rng = np.random.default_rng(0)
    for width, k in [(5000, 100), (3000, 10), (40, 100), (2000, 100)]:
        scores = rng.integers(0, 6, size=(8, width)).astype(np.float32)  # many ties, many zeros
        scores[0] = 0.0  # nothing positive
        scores[1, :] = 0.0
        scores[1, width - 1] = 1.0  # one positive score, at a column the sample skips
        blocked = rng.random((8, width)) < 0.3
        for row, got in zip(range(8), _top_positive(scores, blocked, k)):
            ranked = sorted((-s, c) for c, s in enumerate(scores[row]) if s > 0 and not blocked[row, c])
            assert got.tolist() == [c for _, c in ranked[:k]]


def test_genre_popular_recommends_the_dominant_genre():
    results = by_id(genre_popular(TRAIN, QUESTIONS, meta()))
    # the dance songs by popularity (12: twice, 13 and 14 once; 10 and 11 are given), then the fill
    assert results[102]["songs"][:3] == [12, 13, 14]
    assert results[102]["tags"][:3] == ["x", "y", "z"]
    # ballads: 2 (twice) and 4 (once); 3 is not out yet
    assert results[101]["songs"][:2] == [2, 4] and 3 not in results[101]["songs"]
    assert results[101]["tags"][:3] == ["a", "b", "c"]
    # tags-only: "x" is a dance tag, so the dance songs (10: three playlists, 11, 12: two; ...)
    assert results[103]["songs"][:5] == [10, 11, 12, 13, 14]
    # title-only: the popular fill
    assert results[104] == by_id(popular(TRAIN, QUESTIONS, meta()))[104]


def test_popular_is_the_official_ranking_with_the_date_filter():
    from inference.popular import recommend as official

    train = TRAIN + [playlist(7, list(range(30, 130)), ["z"])]  # enough songs for the official baseline
    ours, theirs = by_id(popular(train, QUESTIONS, meta())), by_id(official(train, QUESTIONS))
    for qid in ours:
        assert ours[qid]["tags"] == theirs[qid]["tags"]
        if 3 in theirs[qid]["songs"]:  # the one song out after the questions' date: the next one moves up
            assert ours[qid]["songs"][:99] == [s for s in theirs[qid]["songs"] if s != 3]
            assert 3 not in ours[qid]["songs"]
        else:
            assert ours[qid]["songs"] == theirs[qid]["songs"]


def test_als_fits_and_ranks_the_neighbours_high():
    results = by_id(als(TRAIN, QUESTIONS, meta(), factors=4, iterations=10))
    assert 2 in results[101]["songs"][:5] and 12 in results[102]["songs"][:5]


def test_ease_weights_are_the_closed_form_with_a_zero_diagonal():
    import numpy as np
    import scipy.sparse as sp

    from models.ease import EASE

    rng = np.random.default_rng(1)
    dense = (rng.random((60, 12)) < 0.3).astype(np.float32)
    dense[:, 11] = 0.0
    rows, cols = np.nonzero(dense)
    values, rows, cols = np.r_[dense[rows, cols], np.zeros(60)], np.r_[rows, range(60)], np.r_[cols, [11] * 60]
    x = sp.csr_matrix((values, (rows, cols)), shape=(60, 12))  # column 11: stored zeros only, never kept
    assert x.nnz == np.count_nonzero(dense) + 60
    model = EASE.fit(x, n_items=10, lam=3.0)
    counts = np.asarray((x != 0).sum(axis=0)).ravel()
    assert model.columns.tolist() == sorted(range(12), key=lambda c: (-counts[c], c))[:10]
    dense = x.toarray()[:, model.columns].astype(np.float64)
    p = np.linalg.inv(dense.T @ dense + 3.0 * np.eye(10))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    assert model.B.dtype == np.float32 and np.all(np.diag(model.B) == 0)
    np.testing.assert_allclose(model.B, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.scores(x[:5]), dense[:5] @ expected, rtol=1e-4, atol=1e-5)


def test_ease_in_float32_above_the_float64_limit_is_the_same_closed_form(monkeypatch):
    import numpy as np
    import scipy.sparse as sp

    import models.ease
    from models.ease import EASE

    rng = np.random.default_rng(2)
    x = sp.csr_matrix((rng.random((80, 9)) < 0.4).astype(np.float32))
    float64 = EASE.fit(x, n_items=9, lam=2.0).B
    monkeypatch.setattr(models.ease, "FLOAT64_LIMIT", 4)
    assert models.ease.gram(x, np.arange(9)).dtype == np.float32
    np.testing.assert_allclose(EASE.fit(x, n_items=9, lam=2.0).B, float64, rtol=1e-4, atol=1e-5)


def test_ease_recommends_the_neighbours_and_drops_the_future_song():
    results = by_id(ease(TRAIN, QUESTIONS, meta(), n_items=100, lam=0.5))
    ballad = results[101]["songs"]
    assert ballad[0] == 2 and 4 in ballad[:3] and 3 not in ballad
    assert results[101]["tags"][0] == "a"
    dance = results[102]["songs"]
    assert dance[0] == 12 and set(dance[1:3]) == {13, 14}
    assert results[102]["tags"][0] == "x"
    assert {10, 11, 12} <= set(results[103]["songs"][:5])
    # title-only: "rainy" and "day" only ever sit with playlist 1's songs and tags
    assert set(results[104]["songs"][:3]) == {0, 1, 2} and set(results[104]["tags"][:2]) == {"a", "b"}


def test_ease_keeps_only_the_most_frequent_items():
    from bench.peers import EaseCF

    peer = EaseCF(TRAIN, QUESTIONS, meta(), title_weight=1.0)
    model = peer.fit(3, 1.0)
    # song 10 is in three playlists; songs 0 and 1 lead the items in two (ties by smaller column)
    assert model.columns.tolist() == [peer.items.song_col[s] for s in (10, 0, 1)] and model.B.shape == (3, 3)
    # the ballad question holds 0 and 1, so only 10 (also the most popular song) may score: the popular answer
    assert peer.recommend([Q_BALLAD], model) == popular(TRAIN, [Q_BALLAD], meta())


def test_playlist_cf_recommends_the_neighbours_and_drops_the_future_song():
    results = by_id(playlist_cf(TRAIN, QUESTIONS, meta(), k=2, power=1.0))
    # the two ballad playlists are the ballad question's neighbours: 2 in both, 4 in one, 3 not out yet
    assert results[101]["songs"][:2] == [2, 4] and 3 not in results[101]["songs"]
    assert results[101]["tags"][0] == "a" and set(results[101]["tags"][1:3]) == {"b", "c"}
    assert results[102]["songs"][0] == 12 and set(results[102]["songs"][1:3]) == {13, 14}
    assert results[102]["tags"][0] == "x"
    assert set(results[103]["songs"][:5]) == {10, 11, 12, 13, 14}
    assert set(results[104]["songs"][:3]) == {0, 1, 2} and set(results[104]["tags"][:2]) == {"a", "b"}


@pytest.mark.parametrize("k, power, title_weight", [(2, 1.0, 1.0), (3, 2.0, 0.5), (10, 0.5, 2.0)])
def test_playlist_cf_votes_are_the_bm25_neighbour_sums_computed_from_the_playlists(monkeypatch, k, power,
                                                                                   title_weight):
    """votes(q, j) = sum over q's k most similar training playlists n of sim(q, n) ** power * [j in n], where sim
    is the cosine of BM25-idf vectors (idf_j = log(1 + (P - n_j + 0.5) / (n_j + 0.5)), keywords also times the
    title weight) over the training playlists' items (bench/peers.py's PlaylistCF docstring)."""
    from bench.peers import PlaylistCF

    questions = QUESTIONS + [Q_MIXED]
    model = PlaylistCF(TRAIN, questions, meta())
    seen = captured_scores(monkeypatch)
    model.recommend(questions, [{"k": k, "power": power, "title_weight": title_weight}])
    songs, tags = seen
    held = holders(TRAIN)

    def vector(p):
        items = [("s", s) for s in p["songs"]] + [("t", t) for t in p["tags"]] + [("w", w) for w in keywords(p)]
        v = {}
        for item in items:
            if item in held:  # items no training playlist holds are unknown
                n = len(held[item])
                v[item] = math.log1p((len(TRAIN) - n + 0.5) / (n + 0.5)) * (title_weight if item[0] == "w" else 1.0)
        norm = math.sqrt(sum(x * x for x in v.values()))
        return {item: x / norm for item, x in v.items()}

    train_vectors = [vector(p) for p in TRAIN]
    song_ids, tag_names = model.items.songs.tolist(), model.items.tags
    for r, q in enumerate(questions):
        qv = vector(q)
        sims = [sum(x * tv.get(item, 0.0) for item, x in qv.items()) for tv in train_vectors]
        order = sorted(range(len(TRAIN)), key=lambda n: -sims[n])
        # the example has no tie across the k-th place among voting playlists: the neighbours are well defined
        assert k >= len(TRAIN) or sims[order[k]] <= 0 or sims[order[k]] < sims[order[k - 1]] - 1e-6, q["id"]
        voters = [n for n in order[:k] if sims[n] > 0]
        votes = defaultdict(float)
        for n in voters:
            for item in [("s", s) for s in TRAIN[n]["songs"]] + [("t", t) for t in TRAIN[n]["tags"]]:
                votes[item] += sims[n] ** power
        np.testing.assert_allclose(songs[r], [votes["s", s] for s in song_ids], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tags[r], [votes["t", t] for t in tag_names], rtol=1e-5, atol=1e-6)
    if (k, power, title_weight) == (2, 1.0, 1.0):
        # by hand: the ballad question's two neighbours are playlists 1 and 2 (songs 0, 1 in both); idf is
        # log(2.8) for an item in two training playlists and log(14 / 3) for one in one. Playlist 1 holds five
        # items of each kind (0, 1, 2, a, "ballad"; 3, b, "rainy", "day" -- four), playlist 2 five and three.
        two, one = math.log(2.8), math.log(14 / 3)
        sim1 = math.sqrt(2) * two / math.sqrt(5 * two ** 2 + 4 * one ** 2)
        sim2 = math.sqrt(2) * two / math.sqrt(5 * two ** 2 + 3 * one ** 2)
        ballad = songs[0]
        assert ballad[song_ids.index(3)] == pytest.approx(sim1, rel=1e-5)  # only playlist 1 holds song 3
        assert ballad[song_ids.index(4)] == pytest.approx(sim2, rel=1e-5)  # only playlist 2 holds song 4
        assert ballad[song_ids.index(2)] == pytest.approx(sim1 + sim2, rel=1e-5)
        assert ballad[song_ids.index(20)] == 0.0


def test_tune_scores_exactly_the_protocols_tuning_part(monkeypatch):
    import bench.peers
    from data.task import parts, select

    questions = [playlist(200 + i, q["songs"], q["tags"], q["plylst_title"], q["updt_date"])
                 for i, q in enumerate(QUESTIONS * 3)]
    answers = [playlist(q["id"], [2, 4, 12], ["a"]) for q in questions]
    seen = []
    real = bench.peers.evaluate

    def spy(truth, results, scored):
        seen.append(([t["id"] for t in truth], [r["id"] for r in results], [q["id"] for q in scored]))
        return real(truth, results, scored)

    monkeypatch.setattr(bench.peers, "evaluate", spy)
    monkeypatch.setitem(bench.peers.GRIDS, "playlist_cf", {"k": [1, 2]})
    result = bench.peers.tune("playlist_cf", TRAIN, questions, answers, meta())
    tuning = [q["id"] for q in select(questions, parts(questions)["tune"])]
    assert 0 < len(tuning) < len(questions)
    assert result["questions_scored"] == len(tuning) and result["questions_part"] == "tune"
    assert len(seen) == 2 and all(ids == (tuning, tuning, tuning) for ids in seen)
    assert [row["settings"]["k"] for row in result["rows"]] == [1, 2]
    limited = bench.peers.tune("playlist_cf", TRAIN, questions, answers, meta(), limit=2)
    assert limited["questions_scored"] == 2 and seen[-1][2] == tuning[:2]


def test_a_question_older_than_the_played_songs_gets_the_oldest_songs_of_the_catalogue():
    song_meta = meta()
    for m in song_meta:
        m["issue_date"] = "20190101" if m["id"] < 30 else "19990101"  # songs 30-129: old, never played
    old = playlist(105, [], ["a"], "rainy", date="2018-06-01 00:00:00.000")
    for name, peer in PEERS.items():
        results = peer(TRAIN, [old], song_meta)
        assert_valid(results, [old], song_meta, TRAIN)
        assert set(results[0]["songs"]) == set(range(30, 130)), name


# ------------------------------------------------------------------------------------ tiny, end to end

SYSTEMS = {"ensemble", "ensemble_without_audio", "ensemble_grid", "ensemble_without_dae", "ensemble_without_title", "ensemble_without_word2vec",
           "ensemble_without_neighbours", "ensemble_without_neural", "dae", "title", "word2vec", "neighbours",
           "playlists", "popular_official", "popular", "genre_popular", "item_cf", "als", "ease", "playlist_cf"}
PEER_NAMES = ("popular", "genre_popular", "item_cf", "als", "ease", "playlist_cf")
# what each neural system is made of (bench/quality.py's docstring), and the quickstart stages training each member
MEMBERS = {"ensemble": {"dae", "title", "word2vec", "item_cf", "playlist_cf", "audio"},
           "ensemble_without_audio": {"dae", "title", "word2vec", "item_cf", "playlist_cf"},
           "ensemble_grid": {"dae", "title", "word2vec", "item_cf", "playlist_cf"},
           "ensemble_without_dae": {"title", "word2vec", "item_cf", "playlist_cf"},
           "ensemble_without_title": {"dae", "word2vec", "item_cf", "playlist_cf"},
           "ensemble_without_word2vec": {"dae", "title", "item_cf", "playlist_cf"},
           "ensemble_without_neighbours": {"dae", "title", "word2vec"},
           "ensemble_without_neural": {"item_cf", "playlist_cf"},
           "dae": {"dae"}, "title": {"title"}, "word2vec": {"word2vec"}, "neighbours": {"item_cf"},
           "playlists": {"playlist_cf"}}
STAGES = {"dae": ("dae",), "title": ("title_pretrain", "title_finetune"), "word2vec": ("word2vec",),
          "item_cf": ("neighbours",), "playlist_cf": ("playlists",), "audio": ("cnn", "audio_index")}


def _fmt(value, digits=1):
    return "n/a" if value is None else f"{value:.{digits}f}"


def check_quality_summary(summary: dict, markdown: str, neural: set[str] | None = None) -> None:
    """What must hold between the figures of a bench.quality summary, whatever the models scored: each
    score from its parts, the overall figures from the by-type ones, every training time from quickstart's
    timings.json and the members' stages, every ratio from the scores, and the Markdown from the JSON.
    ``neural``: the neural systems the run was asked for (``--systems``; default all of them)."""
    systems, timings = summary["systems"], summary["quickstart_timings"]
    members, stages_of = MEMBERS, STAGES
    assert set(systems) == SYSTEMS - (set(MEMBERS) - neural if neural else set())
    for name, s in systems.items():
        sc = s["scores"]
        assert sc["n"] == summary["questions"], name
        assert sc["score"] == pytest.approx(0.85 * sc["music_ndcg"] + 0.15 * sc["tag_ndcg"], rel=1e-12), name
        by_type = sc["by_type"]
        assert set(by_type) == {"songs-only", "songs+tags", "tags-only", "title-only"}, name
        assert sum(row["n"] for row in by_type.values()) == sc["n"], name
        for key in ("music_ndcg", "tag_ndcg"):  # a mean over questions: the by-type means weighted by their counts
            assert sc[key] == pytest.approx(sum(row[key] * row["n"] for row in by_type.values()) / sc["n"],
                                            rel=1e-9), (name, key)
            assert 0.0 <= sc[key] <= 1.0, (name, key)
        assert (s["kind"] == "peer") == (name in PEER_NAMES), name
        if s["kind"] == "neural":
            assert set(s["members"]) == members[name]
            stages = s["training_stages_s"]
            assert set(stages) == {k for ks in stages_of.values() for k in ks}
            if s["train_s_from"] == "timings.json":
                assert stages == {k: (float(timings[k]) if k in timings else None) for k in stages}, name
            assert s["train_s"] == pytest.approx(sum(stages[k] for m in members[name] for k in stages_of[m])), name
            assert (s["blend_fit_s"] is not None) == name.startswith("ensemble"), name  # ensembles fit a blend
        if s["kind"] != "baseline":
            assert s["inference_s"] > 0 and s["peak_rss_gb"] > 0, name
    assert systems["popular_official"]["inference_s"] == timings["popular"]  # quickstart's own popular.json

    def score(name, kind=None):
        sc = systems[name]["scores"]
        return sc["score"] if kind is None else sc["by_type"][kind]["score"]

    ratios = summary["ratios"]
    best = max(score(n) for n in PEER_NAMES)
    assert ratios["best_peer"] in PEER_NAMES and score(ratios["best_peer"]) == best
    assert ratios["ensemble_vs_best_peer"] == pytest.approx(score("ensemble") / best)
    assert ratios["dae_vs_best_peer"] == pytest.approx(score("dae") / best)
    assert ratios["without_neural_vs_ensemble"] == pytest.approx(score("ensemble_without_neural") / score("ensemble"))
    if "ensemble_without_audio" in systems:
        assert ratios["ensemble_vs_without_audio"] == pytest.approx(score("ensemble") / score("ensemble_without_audio"))
    assert set(ratios["by_type"]) == set(systems["ensemble"]["scores"]["by_type"])
    for kind, row in ratios["by_type"].items():
        best_here = max(score(n, kind) for n in PEER_NAMES)
        assert row["best_peer"] in PEER_NAMES and score(row["best_peer"], kind) == best_here, kind
        assert row["ratio"] == pytest.approx(score("ensemble", kind) / best_here), kind
    for name, s in systems.items():  # the Markdown table prints the JSON's figures
        sc = s["scores"]
        assert (f"| {name} | {sc['score']:.4f} | {sc['music_ndcg']:.4f} | {sc['tag_ndcg']:.4f} | "
                f"{_fmt(s['train_s'])} | {_fmt(s['inference_s'])} | {_fmt(s['peak_rss_gb'], 2)} |") in markdown, name
    assert f"ensemble / best peer ({ratios['best_peer']}): **{ratios['ensemble_vs_best_peer']:.3f}**" in markdown


def test_check_quality_summary_catches_an_edited_figure():
    """The committed small results pass; the same results with one figure changed do not."""
    summary = json.loads((REPO / "bench/results/quality_small.json").read_text(encoding="utf-8"))
    markdown = (REPO / "bench/results/quality_small.md").read_text(encoding="utf-8")
    check_quality_summary(summary, markdown)
    edits = [
        lambda s: s["systems"]["ensemble"].update(train_s=s["systems"]["ensemble"]["train_s"] + 10),
        lambda s: s["quickstart_timings"].update(dae=s["quickstart_timings"]["dae"] + 1),
        lambda s: s["systems"]["dae"]["scores"]["by_type"]["tags-only"].update(music_ndcg=0.5),
        lambda s: s["systems"]["ensemble"]["scores"].update(score=s["systems"]["ensemble"]["scores"]["score"] + 1e-3),
        lambda s: s["ratios"].update(dae_vs_best_peer=0.95),
        lambda s: s["ratios"]["by_type"]["title-only"].update(best_peer="popular"),
        lambda s: s["systems"]["ensemble_without_title"].update(members=["dae", "title", "item_cf"]),
    ]
    for edit in edits:
        edited = json.loads(json.dumps(summary))
        edit(edited)
        with pytest.raises(AssertionError):
            check_quality_summary(edited, markdown)
    with pytest.raises(AssertionError):  # the Markdown no longer what the JSON holds
        check_quality_summary(summary, markdown.replace("| dae | 0.1822 |", "| dae | 0.1830 |"))


# A handmade results set for bench.quality's ratios and Markdown: every figure below is worked out by hand from
# these scores. Each score is the same for music and tags (so score = 0.85 music + 0.15 tag holds); n = 5 per type.

def scored(score: float, by_type: dict[str, float]) -> dict:
    return {"score": score, "music_ndcg": score, "tag_ndcg": score, "n": 5 * len(by_type),
            "by_type": {t: {"score": v, "music_ndcg": v, "tag_ndcg": v, "n": 5} for t, v in by_type.items()}}


def handmade_systems() -> dict:
    """The ensemble on four types; no peer is scored on songs+tags; item_cf is not scored on tags-only or
    title-only; the only peer scored on tags-only scored 0 there."""
    def system(kind, scores, train_s=None):
        return {"kind": kind, "scores": scores, "train_s": train_s, "inference_s": 2.0, "peak_rss_gb": 0.5}

    return {"ensemble": system("neural", scored(0.25, {"songs-only": 0.5, "songs+tags": 0.3, "tags-only": 0.1,
                                                       "title-only": 0.08}), 100.0),
            "ensemble_without_neural": system("neural", scored(0.15, {"songs-only": 0.3, "tags-only": 0.05})),
            "dae": system("neural", scored(0.05, {"songs-only": 0.1})),
            "popular": system("peer", scored(0.1, {"songs-only": 0.2, "tags-only": 0.0, "title-only": 0.05}), 1.0),
            "item_cf": system("peer", scored(0.2, {"songs-only": 0.4}), 3.0)}


def test_ratios_of_a_handmade_set_with_a_type_whose_best_peer_scored_0_or_that_no_peer_has():
    """Overall: item_cf is the best peer (0.2): ensemble 0.25 / 0.2 = 1.25, DAE 0.05 / 0.2 = 0.25, the
    ensemble without its neural members 0.15 / 0.25 = 0.6, no audio ablation. By type: songs-only 0.5 / 0.4
    (item_cf); songs+tags has no peer: no best peer, no ratio; tags-only's best (popular, the only peer scored
    there) scored 0: no ratio; title-only 0.08 / 0.05 (popular: item_cf is not scored there)."""
    from bench.quality import ratios

    r = ratios(handmade_systems())
    assert r["best_peer"] == "item_cf" and r["ensemble_vs_best_peer"] == pytest.approx(1.25)
    assert r["dae_vs_best_peer"] == pytest.approx(0.25) and r["without_neural_vs_ensemble"] == pytest.approx(0.6)
    assert r["ensemble_vs_without_audio"] is None
    assert list(r["by_type"]) == ["songs-only", "songs+tags", "tags-only", "title-only"]
    assert r["by_type"]["songs-only"] == {"best_peer": "item_cf", "ratio": pytest.approx(1.25)}
    assert r["by_type"]["songs+tags"] == {"best_peer": None, "ratio": None}
    assert r["by_type"]["tags-only"] == {"best_peer": "popular", "ratio": None}
    assert r["by_type"]["title-only"] == {"best_peer": "popular", "ratio": pytest.approx(1.6)}
    assert json.loads(json.dumps(r)) == r  # the summary file holds it as it is (null where no ratio)


def test_the_markdown_of_a_handmade_set_prints_n_a_where_a_ratio_has_no_figure():
    """report_markdown on the handmade set: the systems' rows, the by-type table without the rows of the
    systems a type lacks, and the ratios, n/a where there is none."""
    from bench.quality import ratios, report_markdown

    systems = handmade_systems()
    summary = {"scale": "tiny", "questions": 20, "train_playlists": 100, "systems": systems,
               "ratios": ratios(systems), "notes": ["a note"]}
    md = report_markdown(summary)
    lines = md.splitlines()
    rows = [line for line in lines if re.match(r"\| (ensemble|ensemble_without_neural|dae|popular|item_cf) \|", line)]
    assert [row.split(" | ")[0:2] for row in rows] == [["| ensemble", "0.2500"], ["| item_cf", "0.2000"],
                                                       ["| ensemble_without_neural", "0.1500"], ["| popular", "0.1000"],
                                                       ["| dae", "0.0500"]]
    assert rows[0].startswith("| ensemble | 0.2500 | 0.2500 | 0.2500 | 100.0 | 2.0 | 0.50 |")
    assert "| ensemble_without_neural | 0.1500 | 0.1500 | 0.1500 | n/a | 2.0 | 0.50 |" in rows[2]
    assert "| songs+tags | ensemble | 5 | 0.3000 | 0.3000 | 0.3000 |" in lines  # alone: no best mark
    assert "| tags-only | ensemble | 5 | 0.1000 | 0.1000 | 0.1000 * |" in lines
    assert "| tags-only | popular | 5 | 0.0000 | 0.0000 | 0.0000 |" in lines
    assert not any(line.startswith(("| tags-only | item_cf", "| title-only | item_cf", "| title-only | dae"))
                   for line in lines)
    assert lines[lines.index("Against the bars (report half):"):lines.index("Notes:")] == [
        "Against the bars (report half):", "",
        "- ensemble / best peer (item_cf): **1.250**",
        "- by question type (ensemble / that type's best peer): songs-only 1.250 (item_cf), songs+tags n/a (no peer), "
        "tags-only n/a (popular), title-only 1.600 (popular)",
        "- ensemble without its trained models (DAE, title BERT, Word2Vec) / ensemble: 0.600",
        "- DAE alone / best peer: 0.250", ""]


def test_ratios_over_a_best_score_of_0_are_n_a_and_their_lines_stay():
    """Every system scored 0 overall: no ratio has a figure; the DAE's and the ablation's lines read n/a
    (those systems ran), the audio line stays out (no audio ablation ran)."""
    from bench.quality import ratios, ratios_markdown

    systems = handmade_systems()
    for s in systems.values():
        s["scores"]["score"] = 0.0
    r = ratios(systems)
    assert r["best_peer"] == "popular"  # the first of the peers tied at 0
    assert r["ensemble_vs_best_peer"] is None and r["dae_vs_best_peer"] is None
    assert r["without_neural_vs_ensemble"] is None and r["ensemble_vs_without_audio"] is None
    assert ratios_markdown(r, systems)[2:] == [
        "- ensemble / best peer (popular): **n/a**",
        "- by question type (ensemble / that type's best peer): songs-only 1.250 (item_cf), songs+tags n/a (no peer), "
        "tags-only n/a (popular), title-only 1.600 (popular)",
        "- ensemble without its trained models (DAE, title BERT, Word2Vec) / ensemble: n/a",
        "- DAE alone / best peer: n/a", ""]
    assert "DAE alone" not in "\n".join(ratios_markdown(r, {n: s for n, s in systems.items() if n != "dae"}))


# The tiny benchmark's subsets: every peer runs, but EASE is not tuned (its grid inverts nine matrices of up to
# 20,000 columns: 157 s of the suite) and of the neural systems only those the bars' ratios read run, with the
# grid blend for its inference path (every ablation is the same code with other members;
# tests/test_inference.py covers each member's inference).
TINY_TUNED = ("als", "item_cf", "playlist_cf")
TINY_NEURAL = ("ensemble", "ensemble_grid", "ensemble_without_neural", "dae")


@pytest.fixture(scope="module")
def tiny_benchmark(quickstart_tiny):
    """bench.quality at tiny scale on the session's tiny main job (tests/conftest.py's quickstart_tiny, which
    ran launch/quickstart.sh with these epochs into ROOT/runs/quickstart-tiny): it reuses that finished run,
    as it does any (bench/quality.py's prepare; the command it would run is tests/test_quickstart.py's)."""
    from conftest import QUICKSTART_EPOCHS

    root = quickstart_tiny.parent.parent
    cmd = [sys.executable, "-m", "bench.quality", "--scale", "tiny", "--out-root", str(root / "runs"),
           "--results-dir", str(root / "results"), "--epochs", *QUICKSTART_EPOCHS, "--tune-peers", *TINY_TUNED,
           "--systems", *TINY_NEURAL]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "a finished quickstart run (scores/table.md): reusing" in proc.stdout + proc.stderr  # not trained twice
    summary = json.loads((root / "results/quality_tiny.json").read_text(encoding="utf-8"))
    return root, summary, proc


@pytest.mark.slow
@pytest.mark.timeout(1800)  # its fixture runs the whole main job (launch/quickstart.sh) and the benchmark at tiny scale
def test_tiny_benchmark_scores_every_system_by_question_type(tiny_benchmark):
    root, summary, _ = tiny_benchmark
    from data.task import parts

    run = root / "runs/quickstart-tiny"
    questions = json.loads((run / "split/questions/val.json").read_text(encoding="utf-8"))
    assert summary["questions"] == len(parts(questions)["report"])
    timings = json.loads((run / "timings.json").read_text(encoding="utf-8"))
    assert summary["quickstart_timings"] == timings
    assert summary["systems"]["ensemble"]["train_s_from"] == "timings.json"
    check_quality_summary(summary, (root / "results/quality_tiny.md").read_text(encoding="utf-8"), set(TINY_NEURAL))
    peers = summary["systems"]
    assert {n for n, s in peers.items() if s.get("tuning")} == set(TINY_TUNED)
    assert peers["ease"]["settings"] == {**DEFAULTS["ease"]}  # untuned: its defaults
    assert peers["item_cf"]["scores"]["score"] > 2 * peers["popular"]["scores"]["score"]
    assert peers["als"]["scores"]["score"] > 2 * peers["popular"]["scores"]["score"]
    assert peers["item_cf"]["tuning"]["best"] == peers["item_cf"]["settings"]
    md = (root / "results/quality_tiny.md").read_text(encoding="utf-8")
    assert "Against the bars" in md and "| title-only |" in md
    assert (root / "results/quality_tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first of these to run builds the tiny benchmark when run alone
@pytest.mark.parametrize("name", ["popular", "genre_popular", "item_cf", "als", "ease", "playlist_cf"])
def test_tiny_benchmark_peers_are_valid_and_never_recommend_seen_or_future_songs(tiny_benchmark, name):
    from data.melon import load_playlists, load_results, load_song_meta

    root, summary, _ = tiny_benchmark
    run = root / "runs/quickstart-tiny"
    questions = load_playlists(run / "split/questions/val.json")
    train = load_playlists(run / "split/orig/train.json")
    answers = load_playlists(run / "split/answers/val.json")
    results = load_results(summary["systems"][name]["results"])
    check_results(answers, results)
    assert [r["id"] for r in results] == [q["id"] for q in questions]
    assert_valid(results, questions, load_song_meta(run / "data/song_meta.json"), train)
