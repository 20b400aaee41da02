"""bench.peers and bench.quality: the peers on a handmade example whose answer is obvious, and the whole
benchmark at tiny scale (slow: it trains the tiny models through launch/quickstart.sh)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.peers import PEERS, als, ease, genre_popular, item_cf, playlist_cf, popular
from data.vocab import release_dates, updt_day
from evaluate.ndcg import check_results

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


def test_item_cf_scores_through_the_playlists_equal_the_item_item_similarity_sum():
    """alpha = 1 takes the (Q X^T) X route; it must be the module docstring's sum of cosines."""
    import numpy as np

    from bench.peers import ItemCF

    model = ItemCF(TRAIN, QUESTIONS, meta())
    columns = [model.items.columns(q) for q in QUESTIONS]
    setting = {"alpha": 1.0, "beta": 0.5, "title_weight": 0.5}
    fast = model._scores(columns, setting, {})
    xn = model.xn_t.T.toarray()
    cosine = xn.T @ xn
    expected = np.zeros_like(fast)
    for r, (songs, tags, words) in enumerate(columns):
        weight = 0.5 if songs or tags else 1.0
        for c in songs + tags:
            expected[r] += cosine[c, :fast.shape[1]]
        for c in words:
            expected[r] += weight * cosine[c, :fast.shape[1]]
    expected *= model.counts[:fast.shape[1]] ** 0.5
    np.testing.assert_allclose(fast, expected, rtol=1e-5, atol=1e-6)
    # the same setting through the explicit similarity rows (the alpha != 1 route, at alpha 1)
    rows = model._scores(columns, {**setting, "alpha": 1.0 + 1e-9}, {})
    np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-6)


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


def test_playlist_cf_votes_are_the_brute_force_neighbour_sum():
    import numpy as np

    from bench.peers import PlaylistCF

    model = PlaylistCF(TRAIN, QUESTIONS, meta())
    q = model.items.matrix(QUESTIONS)
    q.data[:] = 1.0
    train_vectors = model.vectors(model.binary, 0.5).toarray()
    query = model.vectors(q, 0.5).toarray()
    np.testing.assert_allclose(np.linalg.norm(train_vectors, axis=1), 1.0, rtol=1e-6)
    sim = query @ train_vectors.T
    votes = model._votes(sim.astype(np.float32), 3, 2.0)
    targets = model.targets.toarray()
    for r in range(len(QUESTIONS)):
        top = np.argsort(-sim[r], kind="stable")[:3]
        if len(set(np.round(sim[r], 6))) == len(sim[r]):  # no tie at the k-th: the neighbours are unique
            np.testing.assert_allclose(votes[r], (sim[r, top] ** 2) @ targets[top], rtol=1e-5, atol=1e-6)
        assert votes[r].max() <= (sim[r, top] ** 2).sum() + 1e-6


def test_tune_scores_exactly_the_protocols_tuning_part(monkeypatch):
    import bench.peers
    from evaluate.protocol import parts, select

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

SYSTEMS = {"ensemble", "ensemble_without_dae", "ensemble_without_title", "ensemble_without_neighbours",
           "ensemble_without_neural", "dae", "title", "neighbours", "playlists", "popular_official", "popular",
           "genre_popular",
           "item_cf", "als", "ease", "playlist_cf"}


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    cmd = [sys.executable, "-m", "bench.quality", "--scale", "tiny", "--out-root", str(root / "runs"),
           "--results-dir", str(root / "results"), "--epochs", "1", "1", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    summary = json.loads((root / "results/quality_tiny.json").read_text(encoding="utf-8"))
    return root, summary, proc


@pytest.mark.slow
@pytest.mark.timeout(1800)  # its fixture runs the whole main job (launch/quickstart.sh) and the benchmark at tiny scale
def test_tiny_benchmark_scores_every_system_by_question_type(tiny_benchmark):
    root, summary, _ = tiny_benchmark
    assert set(summary["systems"]) == SYSTEMS
    from evaluate.protocol import parts

    questions = json.loads((root / "runs/quickstart-tiny/split/questions/val.json").read_text(encoding="utf-8"))
    assert summary["questions"] == len(parts(questions)["report"])
    for name, s in summary["systems"].items():
        scores = s["scores"]
        for key in ("music_ndcg", "tag_ndcg", "score"):
            assert 0.0 <= scores[key] <= 1.0, (name, key)
        assert scores["score"] == pytest.approx(0.85 * scores["music_ndcg"] + 0.15 * scores["tag_ndcg"])
        assert set(scores["by_type"]) == {"songs-only", "songs+tags", "tags-only", "title-only"}
        assert sum(row["n"] for row in scores["by_type"].values()) == scores["n"] == summary["questions"]
        if s["kind"] != "baseline":
            assert s["inference_s"] > 0 and s["peak_rss_gb"] > 0
        if s["kind"] == "neural":
            assert s["train_s"] > 0
            assert (s["blend_fit_s"] is not None) == name.startswith("ensemble")  # ensembles fit a blend
    ratios = summary["ratios"]
    ens = summary["systems"]["ensemble"]["scores"]["score"]
    assert ratios["ensemble_vs_best_peer"] == pytest.approx(ens / summary["systems"][ratios["best_peer"]]["scores"]["score"])
    assert ratios["best_peer"] in {"popular", "genre_popular", "item_cf", "als", "ease", "playlist_cf"}
    assert "Against the bars" in (root / "results/quality_tiny.md").read_text(encoding="utf-8")
    peers = summary["systems"]
    assert peers["item_cf"]["scores"]["score"] > 2 * peers["popular"]["scores"]["score"]
    assert peers["als"]["scores"]["score"] > 2 * peers["popular"]["scores"]["score"]
    assert peers["item_cf"]["tuning"]["best"] == peers["item_cf"]["settings"]
    md = (root / "results/quality_tiny.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in md for name in SYSTEMS) and "| title-only |" in md
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
