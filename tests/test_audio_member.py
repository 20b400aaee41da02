"""The audio member (inference/audio_member.py): songs outside the vocabulary in the tail of each list.

The rules on lists made here (the tail, the slots fitted per question type), then the member on the
session's tiny main job (``quickstart_tiny``: its CNN, audio index and blend): what it may propose, the
ensemble with forced slots, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load, run_module
from data.vocab import updt_day
from inference.audio_member import SLOTS, fit_slots, with_tail


def test_the_tail_takes_the_proposals_the_list_lacks_and_keeps_100_unique_songs():
    songs = list(range(100))
    assert with_tail(songs, [500, 501, 502], 2) == list(range(98)) + [500, 501]
    assert with_tail(songs, [3, 500, 99, 501], 3) == list(range(98)) + [500, 501]  # songs it holds are skipped
    assert with_tail(songs, [], 10) == songs and with_tail(songs, [500], 0) == songs
    tailed = with_tail(songs, list(range(1000, 1040)), 40)
    assert len(set(tailed)) == 100 and tailed[:60] == songs[:60] and tailed[60:] == list(range(1000, 1040))


def test_slots_are_fitted_per_question_type_and_only_where_the_proposals_are_answers():
    lists = [list(range(100))] * 4
    questions = [{"id": 1, "songs": [7000], "tags": []}, {"id": 2, "songs": [7001], "tags": []},
                 {"id": 3, "songs": [], "tags": ["x"]}, {"id": 4, "songs": [], "tags": ["y"]}]
    # songs-only: the proposals are answers the list misses; tags-only: they miss while the tail of the list hits
    proposed = [[900, 901, 902], [903, 904], [950, 951], [952]]
    answers = {1: [900, 901, 902, 0], 2: [903, 904, 1], 3: [95, 99], 4: [97, 98]}
    slots, table = fit_slots(questions, lists, proposed, answers)
    assert slots["songs-only"] == 5 and slots["tags-only"] == 0 and slots["title-only"] == 0
    assert set(table) == {"songs-only", "tags-only"} and set(table["songs-only"]) == set(SLOTS)
    assert table["songs-only"][5] > table["songs-only"][2] > table["songs-only"][0]
    assert table["tags-only"][0] > table["tags-only"][5]


# ------------------------------------------------------------------------------- the tiny main job's member



@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_member_proposes_only_unseen_songs_outside_the_vocabulary_released_by_the_update_date(quickstart_tiny):
    from data.workdir import verify_workdir
    from inference.audio_member import AudioMember

    run = quickstart_tiny
    work = run / "work"
    vocab = json.loads((work / "vocab.json").read_text(encoding="utf-8"))
    in_vocab = np.array([s for s, _ in vocab["songs"]])
    member = AudioMember(run / "cnn", work, verify_workdir(work, check_shards=False), in_vocab, len(vocab["tags"]))
    release = np.load(work / "release_dates.npz", allow_pickle=False)["release_dates"]
    questions = load(run / "split/questions/val.json")
    days = np.array([updt_day(q["updt_date"]) for q in questions])
    tag_index = {t: i for i, (t, _) in enumerate(vocab["tags"])}
    proposed = member.propose(questions, tag_index, days, release, 20, batch=64)
    assert len(proposed) == len(questions) and sum(map(bool, proposed)) > len(questions) // 2
    vocab_songs = set(in_vocab.tolist())
    for q, day, songs in zip(questions, days, proposed):
        assert len(songs) == len(set(songs)) <= 20
        assert not set(songs) & vocab_songs and not set(songs) & set(q["songs"])
        assert all(release[s] <= day for s in songs)
        if not q["songs"] and not q["tags"]:
            assert songs == []  # a title-only question gives the member nothing to compare
    # the same proposals whatever the batch size
    assert member.propose(questions[:50], tag_index, days[:50], release, 20, batch=7) == proposed[:50]


def _forced_blend(run, tmp_path, slots: int, **change):
    blend = json.loads((run / "blend.json").read_text(encoding="utf-8"))
    blend["audio"]["slots"] = {t: slots for t in blend["audio"]["slots"]}
    blend["audio"].update(change)
    path = tmp_path / "blend.json"
    path.write_text(json.dumps(blend), encoding="utf-8")
    return path


def _infer(run, questions, out, *extra, check=True):
    members = ["--dae", run / "dae", "--title", run / "title-finetune", "--word2vec", run / "word2vec",
               "--neighbours", run / "neighbours", "--neighbours", run / "playlists"]
    return run_module("inference", "--questions", questions, "--work", run / "work", *members, "--out", out,
                      "--no-progress", *extra, check=check)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_forced_slots_put_audio_songs_in_the_tail_of_otherwise_the_same_lists(quickstart_tiny, tmp_path):
    run = quickstart_tiny
    questions = run / "split/questions/val.json"
    blend = _forced_blend(run, tmp_path, 10)
    _infer(run, questions, tmp_path / "with.json", "--blend", blend, "--audio", run / "cnn")
    _infer(run, questions, tmp_path / "without.json", "--blend", blend)
    vocab = {s for s, _ in json.loads((run / "work/vocab.json").read_text(encoding="utf-8"))["songs"]}
    tailed = 0
    for q, with_audio, without in zip(load(questions), load(tmp_path / "with.json"), load(tmp_path / "without.json")):
        assert len(set(with_audio["songs"])) == 100 and not set(with_audio["songs"]) & set(q["songs"])
        assert with_audio["songs"][:90] == without["songs"][:90] and with_audio["tags"] == without["tags"]
        outside = [s for s in with_audio["songs"][90:] if s not in vocab]
        tailed += bool(outside)
        assert outside == with_audio["songs"][100 - len(outside):]  # the member's songs are the last ones
    assert tailed > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_audio_slots_need_a_blend_fitted_with_this_cnn_export(quickstart_tiny, tmp_path):
    run = quickstart_tiny
    questions = run / "split/questions/val.json"
    other = _forced_blend(run, tmp_path, 5, weights_sha256="0" * 64)
    proc = _infer(run, questions, tmp_path / "r.json", "--blend", other, "--audio", run / "cnn", check=False)
    assert proc.returncode == 2 and "another CNN export" in proc.stderr and "Traceback" not in proc.stderr
    proc = _infer(run, questions, tmp_path / "r.json", "--audio", run / "cnn", check=False)
    assert proc.returncode == 2 and "--audio needs --blend" in proc.stderr
    assert not (tmp_path / "r.json").exists()
