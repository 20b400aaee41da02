"""The quality protocol (data/task.py's parts and select, python -m evaluate.protocol): the tuning and report
parts of the validation questions."""

from __future__ import annotations

import random
from collections import Counter

from data.task import question_type
from data.task import PARTS, parts, select
from evaluate.protocol import main


def questions(n: int = 403, seed: int = 0) -> list[dict]:
    """``n`` questions of every type, ids scattered over a wide range."""
    rng = random.Random(seed)
    ids = rng.sample(range(1, 10_000_000), n)
    out = []
    for i, pid in enumerate(ids):
        kind = i % 5
        songs = [rng.randrange(1000)] if kind in (0, 1) else []
        tags = ["t"] if kind in (1, 2) else []
        title = "a title" if kind == 3 else ""
        out.append({"id": pid, "songs": songs, "tags": tags, "plylst_title": title,
                    "updt_date": "2020-01-01 00:00:00.000"})
    return out


def test_parts_are_disjoint_and_cover_every_question():
    qs = questions()
    split = parts(qs)
    assert set(split) == set(PARTS)
    assert not split["tune"] & split["report"]
    assert split["tune"] | split["report"] == {q["id"] for q in qs}


def test_each_question_type_is_split_within_one_with_the_odd_one_tuning():
    qs = questions()
    split = parts(qs)
    types = {q["id"]: question_type(q) for q in qs}
    total = Counter(types.values())
    assert len(total) == 5  # every type is present, the empty one too
    tune = Counter(types[i] for i in split["tune"])
    for t, n in total.items():
        assert tune[t] == (n + 1) // 2, t


def test_parts_are_deterministic_and_independent_of_the_order():
    qs = questions()
    shuffled = qs[:]
    random.Random(5).shuffle(shuffled)
    assert parts(qs) == parts(questions()) == parts(shuffled)


def test_the_hash_not_the_id_order_decides():
    qs = questions()
    split = parts(qs)
    for t in {question_type(q) for q in qs}:
        ids = sorted(q["id"] for q in qs if question_type(q) == t)
        lowest_half = set(ids[:(len(ids) + 1) // 2])
        assert lowest_half != lowest_half & split["tune"]


def test_select_keeps_the_order_of_the_input():
    qs = questions(50)
    ids = parts(qs)["report"]
    chosen = select(qs, ids)
    assert [q["id"] for q in chosen] == [q["id"] for q in qs if q["id"] in ids]
    assert select(qs, set()) == []


def test_main_prints_the_sizes(tmp_path, capsys):
    import json

    path = tmp_path / "q.json"
    path.write_text(json.dumps(questions(21)), encoding="utf-8")
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| all | 11 | 10 |" in out
