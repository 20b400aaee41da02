"""bench.peers and bench.quality: the peers on a handmade example whose answer is obvious, and the whole
benchmark at tiny scale (slow: it trains the tiny models through launch/quickstart.sh)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.peers import PEERS, als, genre_popular, item_cf, popular
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

SYSTEMS = {"ensemble", "dae", "title", "popular_official", "popular", "genre_popular", "item_cf", "als"}


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
def test_tiny_benchmark_scores_every_system_by_question_type(tiny_benchmark):
    root, summary, _ = tiny_benchmark
    assert set(summary["systems"]) == SYSTEMS
    assert summary["questions"] == 400
    for name, s in summary["systems"].items():
        scores = s["scores"]
        for key in ("music_ndcg", "tag_ndcg", "score"):
            assert 0.0 <= scores[key] <= 1.0, (name, key)
        assert scores["score"] == pytest.approx(0.85 * scores["music_ndcg"] + 0.15 * scores["tag_ndcg"])
        assert set(scores["by_type"]) == {"songs-only", "songs+tags", "tags-only", "title-only"}
        assert sum(row["n"] for row in scores["by_type"].values()) == scores["n"] == 400
        if s["kind"] != "baseline":
            assert s["inference_s"] > 0 and s["peak_rss_gb"] > 0
        if s["kind"] == "neural":
            assert s["train_s"] > 0 and 0 <= s["rerun_differing_questions"] <= 400
    peers = summary["systems"]
    assert peers["item_cf"]["scores"]["score"] > 2 * peers["popular"]["scores"]["score"]
    assert peers["als"]["scores"]["score"] > 2 * peers["popular"]["scores"]["score"]
    assert peers["item_cf"]["tuning"]["best"] == peers["item_cf"]["settings"]
    md = (root / "results/quality_tiny.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in md for name in SYSTEMS) and "| title-only |" in md
    assert (root / "results/quality_tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["popular", "genre_popular", "item_cf", "als"])
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
