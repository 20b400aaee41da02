"""Word2Vec: the sampler and the loss on hand-made inputs (in process), then real 2-rank training with
equal weights, resume, the similar-items command line, and vectors that beat random ones on held-out pairs."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, run_module, without_fallback
from data.pipeline import keep_probabilities, negative_cdf
from models.word2vec import Word2Vec, Word2VecConfig

FAST = ["--set", "train.batch_size=64", "--set", "train.warmup_steps=10", "--set", "model.dim=32",
        "--set", "model.pairs=16", "--set", "validation.batch_size=128"]


def train(np_: int, work, out, *extra, check=True, timeout=600) -> subprocess.CompletedProcess:
    cmd = ["horovodrun", "-np", str(np_), sys.executable, str(REPO / "hvd_train/word2vec.py"), "--work", str(work),
           "--out", str(out), *FAST, *map(str, extra)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def sampler_config(**overrides) -> Word2VecConfig:
    base = dict(mode="skipgram", dim=8, cbow_window=3, negatives=4, pairs=50, subsample=0.0)
    return Word2VecConfig(**{**base, **overrides})


def test_subsampling_and_negatives_follow_word2vec_formulas():
    counts = np.array([1000.0, 10.0, 0.0])
    keep = keep_probabilities(counts, 1e-2)
    f = np.array([1000.0, 10.0, 1.0]) / 1010.0  # a count of 0 counts as 1 (a vocabulary item occurred)
    np.testing.assert_allclose(keep, np.minimum(1.0, np.sqrt(1e-2 / f) + 1e-2 / f), rtol=1e-6)
    assert keep[0] < 0.2 and keep[1] == 1.0 and (keep_probabilities(counts, 0.0) == 1).all()
    cdf = negative_cdf(np.array([16.0, 1.0, 81.0]))  # weights 8, 1, 27 under the 0.75 power
    np.testing.assert_allclose(cdf, [8 / 36, 9 / 36, 1.0], rtol=1e-6)


def test_sampler_draws_targets_among_items_and_inputs_at_other_positions(workdirs):
    from data.pipeline import Word2VecSampler

    work = workdirs[0]
    sampler = Word2VecSampler(work, sampler_config(mode="cbow"))
    n_items = sampler.n_items
    record = {"songs": tf.constant([3, 7], tf.int64), "tags": tf.constant([1], tf.int64),
              "title": tf.constant([5, 9], tf.int64)}
    out = {k: v.numpy() for k, v in sampler(record, tf.constant([0, 42], tf.int64)).items()}
    tokens = {3, 7, sampler.n_songs + 1, n_items + 5, n_items + 9}
    assert out["inputs"].shape == (50, 3) and out["targets"].shape == (50,) and out["negatives"].shape == (50, 4)
    assert set(out["targets"]) <= {3, 7, sampler.n_songs + 1}  # songs and tags only, never title pieces
    assert set(out["targets"]) == {3, 7, sampler.n_songs + 1}  # 50 draws reach all three
    assert set(out["inputs"].ravel()) <= tokens and (n_items + 5) in out["inputs"]  # pieces are inputs
    assert not (out["inputs"] == out["targets"][:, None]).any()  # every token occurs once: never itself
    assert ((out["negatives"] >= 0) & (out["negatives"] < n_items)).all()
    lone = {"songs": tf.constant([3], tf.int64), "tags": tf.zeros([0], tf.int64), "title": tf.zeros([0], tf.int64)}
    blank = sampler(lone, tf.constant([0, 1], tf.int64))
    assert all((v.numpy() == -1).all() for v in blank.values())  # one token: no pair, all masked


def test_loss_is_the_negative_sampling_objective_and_its_gradients_are_sparse():
    model = Word2Vec(4, 2, 3, dim=2)
    model.inputs.assign(tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0], [0.0, 0.0], [0.0, 0.0],
                                     [0.0, 0.0], [0.0, 0.0], [2.0, 0.0]]))
    model.outputs.assign(tf.constant([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [-1.0, 0.0]]))
    batch = {"inputs": tf.constant([[[0, 8], [2, -1]]]), "targets": tf.constant([[1, -1]]),
             "negatives": tf.constant([[[5, 3], [0, 0]]])}
    with tf.GradientTape() as tape:
        loss, parts = model.loss(batch)
    # the one real example: u = mean(inputs[0], inputs[8]) = (1.5, 0); target 1: u.w = 0; negatives 5, 3: -1.5, 1.5
    log_sigmoid = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    positive, negative = -log_sigmoid(0.0), -(log_sigmoid(1.5) + log_sigmoid(-1.5))
    assert float(parts["positive"]) == pytest.approx(positive, rel=1e-5)
    assert float(loss) == pytest.approx(positive + negative, rel=1e-5)
    gradients = tape.gradient(loss, [model.inputs, model.outputs])
    assert all(isinstance(g, tf.IndexedSlices) for g in gradients)


@pytest.fixture(scope="module")
def run(workdirs, tmp_path_factory):
    """A tiny 2-rank run of 2 epochs, then resumed to 6."""
    out = tmp_path_factory.mktemp("word2vec") / "run"
    first = train(2, workdirs[0], out, "--set", "train.epochs=2")
    second = train(2, workdirs[0], out, "--set", "train.epochs=6")
    return out, first.stdout, second.stdout


@pytest.mark.slow
def test_two_ranks_train_the_same_sparse_weights_and_resume(run):
    out, first, second = run
    assert "embedding gradients sparse allgather" in first
    for log in (first, second):
        checksums = re.search(r"weight checksums by rank: \[([^\]]+)\]", log).group(1).split(", ")
        assert len(checksums) == 2 and len(set(checksums)) == 1
    assert "resumed from" in second and "epoch 2, step" in second
    assert [int(e) for e in re.findall(r"\[word2vec\] epoch (\d+):", second)] == [3, 4, 5, 6]
    losses = [float(x) for x in re.findall(r"\[word2vec\] epoch \d+: loss ([0-9.]+)", first + second)]
    assert losses[-1] < losses[0] < 6 * math.log(2)  # the loss of zero output vectors: log(2) x (1 + 5 negatives)
    weights = np.load(out / "export/weights.npz")
    np.testing.assert_allclose(np.linalg.norm(weights["unit_inputs"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(weights["unit_inputs"] * np.linalg.norm(weights["inputs"], axis=1, keepdims=True),
                               weights["inputs"], rtol=1e-4, atol=1e-6)
    config = json.loads((out / "export/config.json").read_text())
    assert config["model"] == "word2vec" and config["model_config"]["dim"] == 32


@pytest.mark.slow
def test_vectors_of_songs_that_share_held_out_playlists_are_closer_than_random(run, workdirs):
    """The validation questions' given and answer songs (playlists the model never read) as pairs."""
    out, _, _ = run
    work = workdirs[0]
    vectors = np.load(out / "export/weights.npz")["unit_inputs"]
    vocab = json.loads((work / "vocab.json").read_text())
    index = {s: i for i, (s, _) in enumerate(vocab["songs"])}
    questions = {q["id"]: q for q in json.loads((work / "eval/questions.json").read_text())}
    pairs = [(index[a], index[b]) for answer in json.loads((work / "eval/answers.json").read_text())
             for a in questions[answer["id"]]["songs"][:5] for b in answer["songs"][:5] if a in index and b in index]
    rng = np.random.default_rng(0)
    shuffled = [(a, int(b)) for (a, _), b in zip(pairs, rng.permutation([b for _, b in pairs]))]
    held_out = np.mean([vectors[a] @ vectors[b] for a, b in pairs])
    random = np.mean([vectors[a] @ vectors[b] for a, b in shuffled])
    assert len(pairs) > 200 and held_out > random + 0.05, (held_out, random)


@pytest.mark.slow
def test_similar_lists_the_nearest_items_and_refuses_unknown_ones(run, workdirs, tiny_data):
    out, _, _ = run
    work = workdirs[0]
    vocab = json.loads((work / "vocab.json").read_text())
    song, tag = vocab["songs"][0][0], vocab["tags"][0][0]
    shown = run_module("inference.similar", "--work", work, "--model", out, "--song", song, "--top", "7",
                       "--meta", tiny_data).stdout
    songs = re.findall(r"^\s+\d+\s+(.+?) \((\d+)\)", shown, re.M)
    assert len(songs) == 7 and str(song) not in {s for _, s in songs}  # the song itself is left out
    assert f"nearest to song {song}" in shown and "cosine" in shown
    by_tag = run_module("inference.similar", "--work", work, "--model", out, "--tag", tag).stdout
    assert tag not in re.findall(r"^\s+\d+\s+(\S+)\s+-?[0-9.]+$", by_tag, re.M)
    for args, words in ((["--song", "987654321"], "song 987654321 is not in the"),
                        (["--tag", "no-such-tag"], "tag 'no-such-tag' is not in the"),
                        (["--title", "!!!"], "has no piece"),
                        (["--song", song, "--model", work], "no export (weights.npz + config.json)")):
        refused = run_module("inference.similar", "--work", work, "--model", out, *args, check=False)
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_the_ensemble_answers_with_the_word2vec_member(run, workdirs, tmp_path):
    """python -m inference with the member alone: the official format, no given item, and its own ranking
    (not the popularity fill) on questions that give songs."""
    out, _, _ = run
    work = workdirs[0]
    questions = json.loads((work / "eval/questions.json").read_text())
    results = tmp_path / "word2vec.json"
    run_module("inference", "--questions", work / "eval/questions.json", "--work", work, "--word2vec", out,
               "--out", results, "--no-progress", "--config", without_fallback(tmp_path))
    answered = {r["id"]: r for r in json.loads(results.read_text())}
    assert set(answered) == {q["id"] for q in questions}
    for q in questions:
        r = answered[q["id"]]
        assert len(set(r["songs"])) == 100 and len(set(r["tags"])) == 10
        assert not set(r["songs"]) & set(q["songs"]) and not set(r["tags"]) & set(q["tags"])
    with_songs = [answered[q["id"]]["songs"][:10] for q in questions if q["songs"]]
    assert len({tuple(s) for s in with_songs}) > len(with_songs) // 2  # lists depend on the question
