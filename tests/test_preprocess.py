"""Preprocessing: vocabulary cut-offs, date correction, tokenizer, np=1 vs np=2 identity, per-rank
sharding, the input pipeline, and refusal of corrupted or mismatched work directories."""

from __future__ import annotations

import filecmp
import json
import shutil
from collections import Counter

import numpy as np
import pytest

from conftest import mpirun
from data.workdir import WorkdirError, verify_workdir
from data.title import TitleTokenizer, normalise_title, train_tokenizer
from data.vocab import build_vocab, keep_by_recall, parse_issue_date, release_dates


# ------------------------------------------------------------------ vocabularies and dates
def test_recall_cutoffs_on_a_hand_made_corpus():
    counts = Counter({"a": 50, "b": 30, "c": 10, "d": 6, "e": 4})  # 100 occurrences
    assert [x for x, _ in keep_by_recall(counts, 0.5)] == ["a", "b"]  # a reaches 50% without exceeding it; b crosses
    assert [x for x, _ in keep_by_recall(counts, 0.49)] == ["a"]
    assert [x for x, _ in keep_by_recall(counts, 0.80)] == ["a", "b", "c"]
    assert [x for x, _ in keep_by_recall(counts, 0.90)] == ["a", "b", "c", "d"]
    assert [x for x, _ in keep_by_recall(counts, 1.0)] == ["a", "b", "c", "d", "e"]
    assert [x for x, _ in keep_by_recall(Counter({"y": 5, "x": 5, "z": 1}), 0.6)] == ["x", "y"]  # ties by key


def test_artists_are_counted_once_per_playlist_over_kept_songs():
    meta = [{"artist_id_basket": [10]}, {"artist_id_basket": [10, 11]}, {"artist_id_basket": [12]}]
    train = [{"songs": [0, 1], "tags": ["x"]}, {"songs": [0, 1], "tags": ["x"]}, {"songs": [2], "tags": ["y"]}]
    vocab = build_vocab(train, meta, song_recall=0.7, tag_recall=1.0, artist_recall=1.0)
    assert vocab["songs"] == [[0, 2], [1, 2]]  # song 2 (1 of 5 occurrences) is cut at 70%
    assert vocab["artists"] == [[10, 2], [11, 2]]  # artist 10 once per playlist, artist 12 only on a cut song
    assert vocab["song_artists"] == [[0], [0, 1]]
    assert vocab["tags"] == [["x", 2], ["y", 1]]


def test_release_date_correction():
    meta = [{"issue_date": d} for d in ("20190101", "00000000", "20200301", "20150000", "20991301", "00000000")]
    playlists = [{"songs": [0, 1, 2], "updt_date": "2020-01-15 10:00:00.000"},
                 {"songs": [1, 2, 3], "updt_date": "2019-06-01 00:00:00.000"}]
    assert parse_issue_date("20150000") == 20150101 and parse_issue_date("20991301") == 0
    assert release_dates(meta, playlists).tolist() == [
        20190101,  # valid and before every playlist holding it
        20190601,  # unknown: the earliest playlist holding it
        20190601,  # issued after a playlist holding it: that playlist's date
        20150101,  # month/day 00
        0,  # invalid, in no playlist: unknown
        0,
    ]


# ------------------------------------------------------------------ tokenizer
def test_title_normalisation_and_tokenizer_round_trip():
    assert normalise_title("  새벽 감성 ♥ R&B!!  Playlist\t2020 ") == "새벽 감성 r&b playlist 2020"
    assert normalise_title("🎧✨") == ""
    titles = ["새벽 감성 발라드", "드라이브 할 때 듣는 노래", "R&B chill vibes", "비 오는 날 카페"] * 20
    model = train_tokenizer(titles, vocab_size=80, character_coverage=1.0, seed=1)
    assert model == train_tokenizer(titles, vocab_size=80, character_coverage=1.0, seed=1)  # reproducible
    tok = TitleTokenizer(model)
    for title in titles[:4]:
        ids = tok.encode(title)
        assert ids and min(ids) >= tok.first_piece_id and tok.decode(ids) == normalise_title(title)
    assert tok.encode("🎧") == [] and len(tok.encode("새벽 감성 발라드 " * 30, max_pieces=5)) == 5
    assert tok.pad_id == 0 and len({tok.pad_id, tok.songs_cls_id, tok.tags_cls_id, tok.sep_id, tok.mask_id}) == 5
    with pytest.raises(ValueError, match="no training playlist has a non-empty"):
        train_tokenizer(["🎧", "!!"], 80, 1.0, 1)


# ------------------------------------------------------------------ the work directory
def test_np1_and_np2_give_identical_work_directories(workdirs):
    np1, np2 = workdirs
    compared = filecmp.dircmp(np1, np2)
    files = sorted(str(p.relative_to(np1)) for p in np1.rglob("*") if p.is_file())
    for name in files:
        assert filecmp.cmp(np1 / name, np2 / name, shallow=False), name
    assert not compared.left_only and not compared.right_only
    assert not list(np1.parent.glob("*.partial-*"))  # nothing half-written left behind


def test_manifest_and_records_cover_every_playlist_once(workdirs, tiny_split):
    import tensorflow as tf

    from data.records import decode

    workdir = workdirs[0]
    manifest = verify_workdir(workdir)
    vocab = json.loads((workdir / "vocab.json").read_text())
    assert manifest["sizes"]["songs"] == len(vocab["songs"]) and len(manifest["shards"]["train"]) == 64
    train = json.loads((tiny_split / "orig/train.json").read_text())
    ids = []
    for shard in manifest["shards"]["train"]:
        records = [decode(r) for r in tf.data.TFRecordDataset(str(workdir / shard["file"]))]
        assert len(records) == shard["records"]
        ids += [int(r["id"]) for r in records]
    assert sorted(ids) == sorted(p["id"] for p in train)
    song_index = {s: i for i, (s, _) in enumerate(vocab["songs"])}
    first = next(iter(tf.data.TFRecordDataset(str(workdir / manifest["shards"]["train"][0]["file"])).map(decode)))
    playlist = train[0]  # record 0 goes to shard 0
    assert int(first["id"]) == playlist["id"]
    assert first["songs"].numpy().tolist() == [song_index[s] for s in playlist["songs"] if s in song_index]
    dates = np.load(workdir / "release_dates.npz", allow_pickle=False)["release_dates"]
    assert dates.shape == (manifest["sizes"]["song_meta"],) and (dates > 0).mean() > 0.9


def test_per_rank_sharding_is_disjoint_and_complete(workdirs):
    from data.pipeline import shard_files, training_dataset

    workdir = workdirs[0]
    parts = [shard_files(workdir, "train", rank, 3) for rank in range(3)]
    assert sum(len(p) for p in parts) == 64 and not set(parts[0]) & set(parts[1]) and not set(parts[1]) & set(parts[2])
    seen = []
    for rank in range(2):
        for batch in training_dataset(workdir, "title_finetune", rank, 2, epoch=0, batch_size=64):
            seen += batch["id"].numpy().tolist()
    assert len(seen) == len(set(seen))  # disjoint across ranks
    with pytest.raises(ValueError, match="64 train shards cannot feed 65 ranks"):
        shard_files(workdir, "train", 0, 65)


def test_dae_pipeline_is_deterministic_and_corrupts_as_specified(workdirs):
    from data.pipeline import PAD, training_dataset

    workdir = workdirs[0]
    vocab = json.loads((workdir / "vocab.json").read_text())

    def epoch(e, seed=7):
        return [{k: v.numpy() for k, v in b.items()} for b in training_dataset(workdir, "dae", 0, 2, e, 32, seed=seed)]

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again) for k in a)  # same seed, rank, epoch

    def kept(batches):
        return {int(i): tuple(x for x in row if x != PAD) for b in batches for i, row in zip(b["id"], b["songs_in"])}

    assert kept(first).keys() == kept(other).keys()  # the same playlists every epoch...
    assert sum(kept(first)[i] != kept(other)[i] for i in kept(first)) > 0.9 * len(kept(first))  # ...corrupted anew
    for batch in first:
        for i in range(len(batch["id"])):
            row = {k: [x for x in batch[k][i].tolist() if x != PAD] for k in batch if batch[k].ndim == 2}
            assert set(row["songs_in"]) <= set(row["songs"]) and set(row["tags_in"]) <= set(row["tags"])
            assert len(row["songs_in"]) <= 100 and len(row["tags_in"]) <= 5
            assert row["songs_in"] or row["tags_in"]  # at least one item kept
            assert set(row["artists_in"]) == {a for s in row["songs_in"] for a in vocab["song_artists"][s]}


def test_title_masking(workdirs):
    from data.pipeline import PAD, training_dataset
    from data.title import TitleTokenizer

    tok = TitleTokenizer(workdirs[0] / "title.model")
    chosen = masked = total = 0
    for batch in training_dataset(workdirs[0], "title_mlm", 0, 1, 0, 64, seed=3):
        inp, labels, positions = batch["title_in"].numpy(), batch["title_labels"].numpy(), batch["title_positions"].numpy()
        picked = labels != PAD
        for row, where in zip(picked, positions):  # the positions list exactly the chosen pieces
            assert where[where != PAD].tolist() == np.flatnonzero(row).tolist()
        assert (picked.sum(axis=1) >= 1).all()  # at least one piece per title
        chosen += picked.sum()
        masked += (inp[picked] == tok.mask_id).sum()
        total += (inp != PAD).sum()
    assert 0.12 < chosen / total < 0.35 and 0.7 < masked / chosen < 0.9


# ------------------------------------------------------------------ refusals
def test_corrupted_truncated_or_mixed_workdirs_are_refused(workdirs, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(workdirs[0], work)
    shard = work / "shards/train-00007-of-00064.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(WorkdirError, match="train-00007-of-00064.tfrecord: sha256 differs"):
        verify_workdir(work)
    shutil.copyfile(workdirs[0] / "shards/train-00007-of-00064.tfrecord", shard)
    verify_workdir(work)
    vocab = json.loads((work / "vocab.json").read_text())
    vocab["songs"] = vocab["songs"][:-1]
    (work / "vocab.json").write_text(json.dumps(vocab))  # another run's vocabulary
    with pytest.raises(WorkdirError, match="vocab.json: sha256 differs"):
        verify_workdir(work)
    (work / "manifest.json").unlink()
    with pytest.raises(WorkdirError, match="no manifest.json"):
        verify_workdir(work)


def test_existing_workdir_and_bad_inputs_are_refused(workdirs, tiny_data, tiny_split, tmp_path):
    before = (workdirs[0] / "manifest.json").read_bytes()
    refused = mpirun(2, "--split", tiny_split, "--meta", tiny_data, "--out", workdirs[0], check=False)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert (workdirs[0] / "manifest.json").read_bytes() == before
    missing = mpirun(1, "--split", tmp_path, "--meta", tiny_data, "--out", tmp_path / "w", check=False)
    assert missing.returncode == 2 and "missing input" in missing.stderr and not (tmp_path / "w").exists()
    bad = tmp_path / "bad_split"
    shutil.copytree(tiny_split, bad)
    train = json.loads((bad / "orig/train.json").read_text())
    train[3]["songs"] = ["x"]
    (bad / "orig/train.json").write_text(json.dumps(train))
    broken = mpirun(2, "--split", bad, "--meta", tiny_data, "--out", tmp_path / "w2", check=False)
    assert broken.returncode == 2 and "record 3" in broken.stderr and "'songs'" in broken.stderr
    assert not (tmp_path / "w2").exists() and not list(tmp_path.glob("w2.partial-*"))
