"""The evaluator against hand-computed cases, its rejections, and the CLI."""

from __future__ import annotations

import json
import math

import pytest

from conftest import load, run_module
from data.task import InvalidResults, ndcg, question_type
from data.ndcg import evaluate, question_scores


def answer(i, songs, tags):
    return {"id": i, "plylst_title": "", "songs": songs, "tags": tags, "like_cnt": 0, "updt_date": "2020-01-01 00:00:00.000"}


def result(i, songs, tags):
    return {"id": i, "songs": songs, "tags": tags}


SONGS = list(range(1000, 1100))
TAGS = [f"x{i}" for i in range(10)]


def test_ndcg_by_hand():
    # hits at ranks 0 and 2 of two relevant items: (1/ln2 + 1/ln4) / (1/ln2 + 1/ln3)
    assert ndcg([1, 2], [1, 9, 2]) == pytest.approx((1 / math.log(2) + 1 / math.log(4)) / (1 / math.log(2) + 1 / math.log(3)))
    assert ndcg([5], [5]) == pytest.approx(1.0)
    assert ndcg([5], [4, 5]) == pytest.approx(math.log(2) / math.log(3))
    assert ndcg([5, 6], [7, 8]) == 0.0
    # the ideal DCG counts len(gt) even when fewer can be recommended: 3 relevant, 1 hit at the top
    assert ndcg([1, 2, 3], [1]) == pytest.approx((1 / math.log(2)) / sum(1 / math.log(i + 2) for i in range(3)))


def test_evaluate_weights_music_and_tags():
    answers = [answer(1, [1000, 1001], ["x0"]), answer(2, [5], ["zz"])]
    results = [result(1, SONGS, TAGS), result(2, SONGS, TAGS)]
    scores = evaluate(answers, results)
    music = (1.0 + 0.0) / 2  # playlist 1: both songs at ranks 0,1 -> ideal; playlist 2: no hit
    tag = (1.0 + 0.0) / 2
    assert scores["music_ndcg"] == pytest.approx(music) and scores["tag_ndcg"] == pytest.approx(tag)
    assert scores["score"] == pytest.approx(0.85 * music + 0.15 * tag) and scores["n"] == 2


@pytest.mark.parametrize(
    "results, words",
    [
        ([result(1, SONGS[:99], TAGS)], "99 songs, exactly 100"),
        ([result(1, SONGS, TAGS[:9])], "9 tags, exactly 10"),
        ([result(1, SONGS[:99] + [1000], TAGS)], "repeated songs"),
        ([result(1, SONGS, TAGS[:9] + ["x0"])], "repeated tags"),
        ([result(2, SONGS, TAGS)], "1 missing"),
        ([result(1, SONGS, TAGS), result(1, SONGS, TAGS)], "more than once"),
        ([result(1, SONGS, TAGS), result(3, SONGS, TAGS)], "1 unexpected"),
    ],
)
def test_invalid_results_are_rejected(results, words):
    with pytest.raises(InvalidResults, match=words):
        evaluate([answer(1, [1], ["a"])], results)


def test_answers_the_official_evaluator_crashes_on_are_refused():
    with pytest.raises(InvalidResults, match="no songs"):
        evaluate([answer(1, [], ["a"])], [result(1, SONGS, TAGS)])
    with pytest.raises(InvalidResults, match="at most 100"):
        evaluate([answer(1, list(range(101)), ["a"])], [result(1, SONGS, TAGS)])


def test_question_types():
    assert question_type({"songs": [1], "tags": ["a"], "plylst_title": "t"}) == "songs+tags"
    assert question_type({"songs": [1], "tags": [], "plylst_title": ""}) == "songs-only"
    assert question_type({"songs": [], "tags": ["a"], "plylst_title": "t"}) == "tags-only"
    assert question_type({"songs": [], "tags": [], "plylst_title": " 새벽 "}) == "title-only"
    assert question_type({"songs": [], "tags": [], "plylst_title": "  "}) == "empty"


def test_by_type_breakdown_adds_up():
    answers = [answer(1, [1000], ["x0"]), answer(2, [7], ["x1"]), answer(3, [1001], ["q"])]
    questions = [answer(1, [3], []), answer(2, [], ["a"]), answer(3, [], [])]
    questions[2]["plylst_title"] = "비 오는 날"
    results = [result(i, SONGS, TAGS) for i in (1, 2, 3)]
    scores = evaluate(answers, results, questions)
    by = scores["by_type"]
    assert set(by) == {"songs-only", "tags-only", "title-only"}
    assert by["songs-only"]["music_ndcg"] == pytest.approx(1.0) and by["tags-only"]["music_ndcg"] == 0.0
    assert sum(b["n"] * b["score"] for b in by.values()) / 3 == pytest.approx(scores["score"])


def test_question_scores_average_to_the_score_and_pair_up():
    from bench.title_pretraining import paired_bootstrap

    answers = [answer(1, [1000], ["x0"]), answer(2, [7], ["y"]), answer(3, [1001], ["q"])]
    good = [result(i, SONGS, TAGS) for i in (1, 2, 3)]
    worse = [result(i, SONGS[::-1], TAGS[::-1]) for i in (1, 2, 3)]
    per = question_scores(answers, good)
    assert sorted(per) == [1, 2, 3] and per[1] == pytest.approx(1.0)
    assert sum(per.values()) / 3 == pytest.approx(evaluate(answers, good)["score"])
    d = paired_bootstrap(per, question_scores(answers, worse), [1, 2, 3])
    assert d["mean_difference"] > 0 and d["ci95"][0] <= d["mean_difference"] <= d["ci95"][1]
    assert d["first_better"] == 2 and d["second_better"] == 0  # question 2: neither finds song 7 or tag y
    with pytest.raises(InvalidResults):
        question_scores(answers, good[:2])


def test_cli_json_and_exit_codes(tmp_path):
    gt, rec, bad = tmp_path / "gt.json", tmp_path / "rec.json", tmp_path / "bad.json"
    gt.write_text(json.dumps([answer(1, [1000], ["x0"])]))
    rec.write_text(json.dumps([result(1, SONGS, TAGS)]))
    bad.write_text(json.dumps([result(1, SONGS[:50], TAGS)]))
    out = run_module("evaluate", "--gt", gt, "--rec", rec, "--questions", gt, "--json")
    scores = json.loads(out.stdout)
    assert set(scores) == {"music_ndcg", "tag_ndcg", "score", "n", "by_type"} and scores["score"] == pytest.approx(1.0)
    table = run_module("evaluate", "--gt", gt, "--rec", rec).stdout
    assert "music nDCG" in table and "1.0000" in table
    failed = run_module("evaluate", "--gt", gt, "--rec", bad, check=False)
    assert failed.returncode == 2 and "50 songs, exactly 100" in failed.stderr and "Traceback" not in failed.stderr
    missing = run_module("evaluate", "--gt", gt, "--rec", tmp_path / "none.json", check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_popularity_baseline_is_valid_and_excludes_seen_items(tiny_split, tmp_path):
    out = tmp_path / "pop.json"
    run_module("inference.popular", "--train", tiny_split / "orig/train.json",
               "--questions", tiny_split / "questions/val.json", "--out", out)
    results, questions = load(out), load(tiny_split / "questions/val.json")
    scores = evaluate(load(tiny_split / "answers/val.json"), results, questions)  # raises if invalid
    assert 0.0 < scores["score"] < 0.2
    counts = {}
    for p in load(tiny_split / "orig/train.json"):
        for s in p["songs"]:
            counts[s] = counts.get(s, 0) + 1
    for q, r in zip(questions, results):
        assert q["id"] == r["id"]
        assert not set(q["songs"]) & set(r["songs"]) and not set(q["tags"]) & set(r["tags"])
        ranked = [counts[s] for s in r["songs"]]
        assert ranked == sorted(ranked, reverse=True)  # most popular first
