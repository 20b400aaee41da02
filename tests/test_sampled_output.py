"""The DAE's sampled output (models/sampled.py) and the row-wise Adam it relies on (models/layers.py), on
hand-made batches in process; the trainer's real ranks with loss.output=sampled: tests/test_dae_trainer.py."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.dae import DAE, dae_loss
from models.layers import Adam
from models.sampled import SampledOutput, candidates, log_inclusion

SIZES = (30, 6, 8)
SMALL = dict(hidden=16, blocks=1, heads=2, ffn=32, activation="gelu", dropout=0.0, tied_output=True, title=False)


def pad(rows, width=6):
    return tf.constant([r + [-1] * (width - len(r)) for r in rows], tf.int32)


def batch():
    """Two playlists: songs 0-5 (given 0, 1) with tags 0, 1 (given 0); songs 10-13 (given 10), no tags."""
    return {"songs_in": pad([[0, 1], [10]]), "tags_in": pad([[0], []]), "artists_in": pad([[0], [3]]),
            "songs": pad([[0, 1, 2, 3, 4, 5], [10, 11, 12, 13]]), "tags": pad([[0, 1], []]),
            "artists": pad([[0, 1], [3, 4]])}


def test_candidates_mark_each_rows_targets_and_given_items_by_id():
    chosen = candidates(pad([[5, 7, 2], [7, 9]]), pad([[5], [9]]), tf.constant([2, 30, 30, 9], tf.int32), hidden=True)
    ids = chosen.ids.numpy().tolist()
    assert sorted(ids) == [2, 5, 7, 9, 30] and len(ids) == len(set(ids))  # each candidate once
    col = {item: ids.index(item) for item in ids}
    wanted, given = chosen.wanted.numpy(), chosen.given.numpy()
    assert wanted.shape == given.shape == (2, 5)
    assert {i for i in ids if wanted[0, col[i]]} == {7, 2} and {i for i in ids if wanted[1, col[i]]} == {7}
    assert {i for i in ids if given[0, col[i]]} == {5} and {i for i in ids if given[1, col[i]]} == {9}
    every = candidates(pad([[5, 7, 2], [7, 9]]), pad([[5], [9]]), tf.constant([30], tf.int32), hidden=False)
    every_col = {item: i for i, item in enumerate(every.ids.numpy().tolist())}
    assert every.wanted.numpy()[0, every_col[5]] == 1  # targets=all keeps the given items as targets


def test_inclusion_chance_matches_a_simulation_of_the_steps_candidates():
    rng = np.random.default_rng(0)
    counts = np.array([400, 100, 20, 5, 1] + [1] * 95)
    playlists, batch_size, negatives, alpha = 1000, 8, 10, 0.5
    log_q, log_weights = log_inclusion(counts, playlists, batch_size, negatives, alpha)
    np.testing.assert_allclose(np.exp(log_weights).sum(), 1.0, rtol=1e-5)
    hits = np.zeros(len(counts))
    trials = 20000
    for _ in range(trials):
        held = rng.random((batch_size, len(counts))) < counts / playlists  # playlists hold items independently
        drawn = rng.choice(len(counts), size=negatives, p=np.exp(log_weights) / np.exp(log_weights).sum())
        present = held.any(axis=0)
        present[drawn] = True
        hits += present
    np.testing.assert_allclose(np.exp(log_q)[:5], hits[:5] / trials, rtol=0.05)


def test_a_sampled_step_scores_candidates_only_and_touches_only_their_rows():
    tf.random.set_seed(0)
    model = DAE(*SIZES, **{**SMALL, "tied_output": False})
    counts = {"songs": np.arange(30, 0, -1), "tags": np.ones(6), "artists": np.ones(8)}
    sampler = SampledOutput(counts, playlists=50, batch=2, negatives=7, alpha=0.75)
    assert sampler.sampled("songs") and sampler.sampled("artists") and not sampler.sampled("tags")  # 6 <= 7: full
    with tf.GradientTape() as tape:
        loss, parts = dae_loss(model, batch(), 0.15, 0.15, 0.0, training=True, item_loss="softmax", targets="hidden",
                               sampler=sampler)
    assert np.isfinite(float(loss)) and set(parts) == {"songs", "tags", "artists"}
    grad = tape.gradient(loss, model.output_table)
    assert isinstance(grad, tf.IndexedSlices)
    song_rows = {r for r in grad.indices.numpy().tolist() if r < SIZES[0]}
    # the songs' rows touched are the batch's songs and at most 7 negatives; never every song
    assert set(range(6)) | set(range(10, 14)) <= song_rows and len(song_rows) <= 10 + 7 < SIZES[0]
    first = {k: v[:1] for k, v in batch().items()}  # the first playlist alone: songs 0, 1 given
    with tf.GradientTape() as tape:
        loss, _ = dae_loss(model, first, 0.15, 0.15, 0.0, training=True, item_loss="softmax", targets="hidden",
                           sampler=sampler)
    dense = tf.convert_to_tensor(tape.gradient(loss, model.output_table)).numpy()
    assert np.abs(dense[[0, 1]]).max() < 1e-6  # the given songs are masked out of their row's softmax
    assert np.abs(dense[[2, 3]]).max() > 1e-6  # hidden targets pull


def test_sampled_loss_with_the_whole_vocabulary_as_negatives_is_the_full_softmax_up_to_the_correction():
    """With every item a candidate at Q = 1 (log Q = 0), the sampled loss is the full one."""
    tf.random.set_seed(2)
    model = DAE(*SIZES, **SMALL)
    counts = {kind: np.full(n, 10_000.0) for kind, n in zip(("songs", "tags", "artists"), SIZES)}
    sampler = SampledOutput(counts, playlists=10, batch=2, negatives=5, alpha=1.0)  # every item held: Q = 1
    _, full = dae_loss(model, batch(), 0.15, 0.15, 0.0, training=False, item_loss="softmax", targets="hidden")
    drawn = {"songs": tf.range(30), "tags": tf.range(6), "artists": tf.range(8)}
    sampler.draw = lambda kind: drawn[kind]  # every item among the candidates
    _, sampled = dae_loss(model, batch(), 0.15, 0.15, 0.0, training=False, item_loss="softmax", targets="hidden",
                          sampler=sampler)
    for kind in ("songs", "tags", "artists"):
        np.testing.assert_allclose(float(sampled[kind]), float(full[kind]), rtol=1e-5)


def test_adam_on_rows_matches_the_fused_dense_step_and_leaves_other_rows_alone():
    table = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    dense_var, rows_var = tf.Variable(table), tf.Variable(table)
    dense_opt, rows_opt = Adam([dense_var], 0.9, 0.98, 1e-9), Adam([rows_var], 0.9, 0.98, 1e-9)
    values = tf.constant(np.random.default_rng(2).normal(size=(3, 3)), tf.float32)
    sparse = tf.IndexedSlices(values, tf.constant([4, 1, 4]), tf.constant([10, 3]))  # row 4 twice: summed
    for _ in range(2):  # the same rows twice: lazy and dense Adam agree on them; the other rows never move
        dense_opt.apply([tf.convert_to_tensor(sparse)], [dense_var], 1e-2)
        rows_opt.apply([sparse], [rows_var], 1e-2)
    np.testing.assert_allclose(rows_var.numpy(), dense_var.numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(rows_var.numpy()[[0, 2, 3, 5]], table[[0, 2, 3, 5]])
    assert not np.allclose(rows_var.numpy()[[1, 4]], table[[1, 4]])
