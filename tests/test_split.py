"""The official local split: semantics on hand-made data, and identity with the official script."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from conftest import load, run_module
from data.split import LEADERBOARD_MIX, OFFICIAL_MIX, mask_questions, split


def playlists(n=200, seed=0, least=1):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        n_songs = int(rng.integers(least, 201))
        n_tags = int(rng.integers(least, 12))
        out.append({"id": i, "plylst_title": f"title {i}", "tags": [f"t{j}" for j in rng.permutation(40)[:n_tags]],
                    "songs": [int(s) for s in rng.permutation(5000)[:n_songs]], "like_cnt": i,
                    "updt_date": "2020-01-01 00:00:00.000"})
    return out


# ---- the official kakao-arena split_data.py, transcribed (global RNGs, numpy fancy indexing) ----
def official_mask(pls, mask_cols, del_cols):
    q_pl, a_pl = copy.deepcopy(pls), copy.deepcopy(pls)
    for i in range(len(pls)):
        for del_col in del_cols:
            q_pl[i][del_col] = []
            if del_col == "songs":
                a_pl[i][del_col] = a_pl[i][del_col][:100]
            elif del_col == "tags":
                a_pl[i][del_col] = a_pl[i][del_col][:10]
        for col in mask_cols:
            mask_len = len(pls[i][col])
            mask = np.full(mask_len, False)
            mask[: mask_len // 2] = True
            np.random.shuffle(mask)
            q_pl[i][col] = list(np.array(q_pl[i][col])[mask])
            a_pl[i][col] = list(np.array(a_pl[i][col])[np.invert(mask)])
    return q_pl, a_pl


def official_run(pls):
    random.seed(777)
    np.random.seed(777)
    pls = copy.deepcopy(pls)
    random.shuffle(pls)
    tot = len(pls)
    train, val = pls[: int(tot * 0.80)], pls[int(tot * 0.80):]
    tot = len(val)
    parts = [(val[: int(tot * 0.3)], ["songs"], ["tags"]), (val[int(tot * 0.3): int(tot * 0.8)], ["songs", "tags"], []),
             (val[int(tot * 0.8): int(tot * 0.95)], ["tags"], ["songs"]), (val[int(tot * 0.95):], [], ["songs", "tags"])]
    q, a = [], []
    for part, mask_cols, del_cols in parts:
        pq, pa = official_mask(part, mask_cols, del_cols)
        q += pq
        a += pa
    idx = np.arange(len(q))
    np.random.shuffle(idx)
    return train, val, [q[i] for i in idx], [a[i] for i in idx]


def plain(records):
    return [{k: ([x.item() if hasattr(x, "item") else x for x in v] if isinstance(v, list) else v) for k, v in r.items()} for r in records]


@pytest.mark.parametrize("n", [200, 337])
def test_identical_to_the_official_script(n):
    data = playlists(n)
    train, val, q, a = official_run(data)
    ours = split(data, seed=777)
    assert ours["orig/train"] == train and ours["orig/val"] == val
    assert ours["questions/val"] == plain(q)
    assert ours["answers/val"] == plain(a)


def test_mask_semantics():
    data = playlists(400, least=2)  # every masked column keeps at least one item
    parts = split(data, seed=5)
    full = {p["id"]: p for p in data}
    assert len(parts["orig/train"]) == 320 and len(parts["orig/val"]) == 80
    assert {p["id"] for p in parts["orig/train"]}.isdisjoint(p["id"] for p in parts["orig/val"])
    kinds = {"songs-only": 0, "songs+tags": 0, "tags-only": 0, "title-only": 0}
    for q, a in zip(parts["questions/val"], parts["answers/val"]):
        assert q["id"] == a["id"]
        p = full[q["id"]]
        assert q["plylst_title"] == p["plylst_title"]  # the title is always kept
        songs_masked = len(q["songs"]) == len(p["songs"]) // 2 and set(q["songs"]) | set(a["songs"]) == set(p["songs"])
        tags_masked = len(q["tags"]) == len(p["tags"]) // 2 and set(q["tags"]) | set(a["tags"]) == set(p["tags"])
        songs_deleted = q["songs"] == [] and a["songs"] == p["songs"][:100]
        tags_deleted = q["tags"] == [] and a["tags"] == p["tags"][:10]
        assert set(q["songs"]).isdisjoint(a["songs"]) or songs_deleted
        if songs_masked and tags_deleted:
            kinds["songs-only"] += 1
        elif songs_masked and tags_masked:
            kinds["songs+tags"] += 1
        elif songs_deleted and tags_masked:
            kinds["tags-only"] += 1
        elif songs_deleted and tags_deleted:
            kinds["title-only"] += 1
        else:
            raise AssertionError(f"question {q['id']} fits no question type")
    # the official boundaries: int(80*0.3)=24, int(80*0.8)-24=40, int(80*0.95)-64=12, the rest 4
    assert kinds == {"songs-only": 24, "songs+tags": 40, "tags-only": 12, "title-only": 4}


def test_answers_of_deleted_columns_are_truncated():
    long = [{"id": 0, "plylst_title": "x", "tags": [f"t{i}" for i in range(11)], "songs": list(range(200)),
             "like_cnt": 0, "updt_date": "2020-01-01 00:00:00.000"}]
    q, a = mask_questions(long, OFFICIAL_MIX[3:], np.random.RandomState(0))  # title-only: both deleted
    assert q[0]["songs"] == [] and q[0]["tags"] == []
    assert a[0]["songs"] == list(range(100)) and a[0]["tags"] == [f"t{i}" for i in range(10)]


def test_leaderboard_mix_blanks_titles_of_song_questions():
    data = playlists(1000, least=2)
    q, a = mask_questions(data, LEADERBOARD_MIX, np.random.RandomState(1))
    full = {p["id"]: p for p in data}
    with_songs = [x for x in q if x["songs"]]
    assert with_songs and all(x["plylst_title"] == "" for x in with_songs)
    without = [x for x in q if not x["songs"]]
    assert len(without) == 1000 - int(1000 * 0.81) and all(x["plylst_title"] == full[x["id"]]["plylst_title"] for x in without)
    assert sum(1 for x in without if x["tags"]) == int(1000 * 0.925) - int(1000 * 0.81)  # tags+title


def test_cli_writes_four_files_and_refuses_to_overwrite(tiny_data, tmp_path):
    out = tmp_path / "split"
    run_module("data.split", tiny_data / "train.json", "--out", out)
    files = {n: load(out / f"{n}.json") for n in ("orig/train", "orig/val", "questions/val", "answers/val")}
    total = len(load(tiny_data / "train.json"))
    assert len(files["orig/train"]) == int(total * 0.8) and len(files["orig/val"]) == total - int(total * 0.8)
    assert [q["id"] for q in files["questions/val"]] == [a["id"] for a in files["answers/val"]]
    again = run_module("data.split", tiny_data / "train.json", "--out", out, check=False)
    assert again.returncode == 2 and "--force" in again.stderr
