"""The DAE's generalisation levers on hand-made batches: hidden targets, the untied output table, the artist
prior, and the decoupled weight decay of the training step (in process; the trainer's real ranks are tested elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from hvd_train.dae import DEFAULT_CONFIG
from inference.exports import ExportError, model_config
from models.dae import DAE, DAEConfig, dae_loss
from models.losses import hide_given, multi_hot

SIZES = (30, 6, 8)
# a small DAE: every hyper-parameter is given (the model has no defaults; configs/dae.yaml holds them)
SMALL = dict(hidden=16, blocks=1, heads=2, ffn=32, activation="gelu", dropout=0.1, tied_output=True, title=False)


def dae(**overrides) -> DAE:
    return DAE(*SIZES, **{**SMALL, **overrides})


def batch():
    """Two playlists: songs 0-5 (given 0, 1) with tags 0, 1 (given 0); songs 10-13 (given 10), no tags."""
    pad = lambda rows: tf.constant([r + [-1] * (6 - len(r)) for r in rows], tf.int32)  # noqa: E731
    return {"songs_in": pad([[0, 1], [10]]), "tags_in": pad([[0], []]), "artists_in": pad([[0], [3]]),
            "songs": pad([[0, 1, 2, 3, 4, 5], [10, 11, 12, 13]]), "tags": pad([[0, 1], []]),
            "artists": pad([[0, 1], [3, 4]])}


def test_hide_given_masks_only_the_given_items():
    logits = tf.zeros([2, 5])
    out = hide_given(logits, tf.constant([[1, 3, -1], [-1, -1, -1]])).numpy()
    assert (out[0, [1, 3]] < -1e8).all() and (out[0, [0, 2, 4]] == 0).all() and (out[1] == 0).all()


def test_hidden_targets_score_only_what_the_corruption_left_out():
    tf.random.set_seed(0)
    model = dae(dropout=0.0)
    b = batch()
    logits = model(b["songs_in"], b["tags_in"], b["artists_in"])[0]
    _, parts = dae_loss(model, b, 0.0, 0.0, 0.0, training=False, item_loss="softmax", targets="hidden")
    # by hand: the multinomial log-likelihood of the hidden songs under a softmax over the non-given songs
    expected = []
    for row, given, wanted in ((0, [0, 1], [2, 3, 4, 5]), (1, [10], [11, 12, 13])):
        z = logits[row].numpy().astype(np.float64)
        z[given] = -np.inf
        log_p = z - np.log(np.exp(z - z[np.isfinite(z)].max())[np.isfinite(z)].sum()) - z[np.isfinite(z)].max()
        expected.append(-log_p[wanted].mean())
    np.testing.assert_allclose(float(parts["songs"]), np.mean(expected), rtol=1e-5)
    _, everything = dae_loss(model, b, 0.0, 0.0, 0.0, training=False, item_loss="softmax", targets="all")
    assert abs(float(everything["songs"]) - float(parts["songs"])) > 1e-3  # the switch changes the loss


def test_hidden_targets_give_no_gradient_to_the_given_items_output_rows():
    tf.random.set_seed(1)
    model = dae(dropout=0.0, tied_output=False)
    b = {k: v[:1] for k, v in batch().items()}  # the first playlist alone: songs 0, 1 given
    with tf.GradientTape() as tape:
        loss, _ = dae_loss(model, b, 0.15, 0.15, 0.0, training=True, item_loss="softmax", targets="hidden")
    grad = tf.convert_to_tensor(tape.gradient(loss, model.output_table)).numpy()
    assert np.abs(grad[[0, 1]]).max() < 1e-6  # masked: their logits are out of the softmax
    assert np.abs(grad[[2, 11]]).max() > 1e-6  # a hidden target pulls, a non-target pushes


def test_untied_output_table_is_its_own_variable():
    tied, untied = dae(), dae(tied_output=False)
    assert tied.output_table is None
    assert untied.output_table.shape == (sum(SIZES), 16)
    assert len(untied.trainable_variables) == len(tied.trainable_variables) + 1
    b = batch()
    with tf.GradientTape() as tape:
        loss, _ = dae_loss(untied, b, 0.15, 0.15, 0.0, training=True, item_loss="softmax")
    grad = tf.convert_to_tensor(tape.gradient(loss, untied.embedding)).numpy()
    assert np.abs(grad[[20, 25]]).max() == 0  # songs in no playlist of the batch: the input table is untouched


def test_multi_hot_ignores_padding():
    out = multi_hot(tf.constant([[2, 0, -1], [-1, -1, -1]]), 4).numpy()
    np.testing.assert_array_equal(out, [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_title_segment_reads_the_title_and_only_when_built_to():
    tf.random.set_seed(2)
    model = dae(dropout=0.0, title=True, n_pieces=9)
    b = batch()
    # the table: items, then the 9 pieces' rows, then 3 CLS and PAD
    assert model.piece_offset == sum(SIZES) and model.embedding.shape == (sum(SIZES) + 9 + 4, 16)
    ids = model.tokens(b["songs_in"], b["tags_in"], b["artists_in"], tf.constant([[0, 8], [3, -1]])).numpy()
    assert ids[0, -2:].tolist() == [sum(SIZES), sum(SIZES) + 8] and ids[1, -1] == model.pad_id
    songs = lambda title: model(b["songs_in"], b["tags_in"], b["artists_in"], title)[0].numpy()  # noqa: E731
    assert np.abs(songs(tf.constant([[1], [2]])) - songs(tf.constant([[4], [5]]))).max() > 1e-4
    np.testing.assert_allclose(songs(tf.constant([[-1], [-1]])), songs(None), rtol=1e-6)  # no title = all pads
    # a title-only question: empty items, the title alone makes the input
    empty = tf.fill([2, 1], -1)
    only = model(empty, empty, empty, tf.constant([[1], [2]]))[0].numpy()
    assert np.abs(only[0] - only[1]).max() > 1e-4
    plain = dae()
    assert plain.piece_offset is None and plain.embedding.shape == (sum(SIZES) + 4, 16)


def test_corruption_title_draws_leave_the_item_draws_alone():
    from data.pipeline import dae_corruption

    song_artists = tf.ragged.constant([[i % 3] for i in range(20)], dtype=tf.int32)
    record = {"id": tf.constant(7, tf.int64), "updt_date": tf.constant(0, tf.int64),
              "songs": tf.constant(list(range(12)), tf.int64), "tags": tf.constant([0, 1, 2], tf.int64),
              "artists": tf.constant([0, 1, 2], tf.int64), "title": tf.constant([4, 5, 6], tf.int64)}
    for s in range(20):
        seed = tf.constant([3, s], tf.int64)
        off = dae_corruption(record, seed, song_artists)
        kept = dae_corruption(record, seed, song_artists, title_keep=1.0)
        assert off["title_in"].numpy().size == 0 and kept["title_in"].numpy().tolist() == [4, 5, 6]
        for key in ("songs_in", "tags_in", "artists_in"):
            assert off[key].numpy().tolist() == kept[key].numpy().tolist()
        only = dae_corruption(record, seed, song_artists, title_keep=1.0, title_only=1.0)
        assert only["songs_in"].numpy().size == only["tags_in"].numpy().size == 0
        assert only["title_in"].numpy().tolist() == [4, 5, 6] and only["songs"].numpy().size == 12
    rates = [dae_corruption(record, tf.constant([4, s], tf.int64), song_artists, title_keep=0.5)["title_in"].numpy().size
             > 0 for s in range(200)]
    assert 0.35 < np.mean(rates) < 0.65


def test_dropout_draws_a_stream_per_rank_after_the_shared_initialisation():
    from hvd_train.common import seed_dropout

    def masks(rank):
        tf.random.set_seed(0)
        model = dae(dropout=0.5)  # the shared seed: the same initial weights
        seed_dropout(0, rank)
        b = batch()
        step = tf.function(lambda: model(b["songs_in"], b["tags_in"], b["artists_in"], training=True)[0])
        return model.embedding.numpy(), step().numpy()

    (init0, out0), (init1, out1), (again, out_again) = masks(0), masks(1), masks(0)
    np.testing.assert_array_equal(init0, init1)
    assert np.abs(out0 - out1).max() > 1e-4  # different dropout masks on the two ranks
    np.testing.assert_array_equal(out0, out_again)  # and each rank's stream is reproducible


def test_an_untied_dae_started_from_popularity_ranks_exactly_by_popularity():
    tf.random.set_seed(2)
    rng = np.random.default_rng(0)
    counts = {kind: rng.permutation(n) + 1.0 for kind, n in zip(("songs", "tags", "artists"), SIZES)}
    b = batch()
    untied = dae(dropout=0.0, tied_output=False)
    untied.start_from_popularity(counts, playlists=2000)
    for logits, kind in zip(untied(b["songs_in"], b["tags_in"], b["artists_in"]), ("songs", "tags", "artists")):
        np.testing.assert_allclose(logits.numpy(), np.broadcast_to(np.log(counts[kind] / 2000), logits.shape), atol=1e-5)
    tied = dae(dropout=0.0)
    before = tied.embedding.numpy()
    tied.start_from_popularity(counts, playlists=2000)
    np.testing.assert_allclose(tied.biases[0].numpy(), np.log(counts["songs"] / 2000), atol=1e-5)
    np.testing.assert_array_equal(tied.embedding.numpy(), before)  # the input embeddings are left alone
    with np.testing.assert_raises(ValueError):  # counts of another vocabulary
        tied.start_from_popularity({**counts, "tags": counts["tags"][:-1]}, playlists=2000)


def test_artist_rows_carry_what_one_song_learns_to_its_artists_other_songs():
    """Songs 20 and 21 share artist 5, song 22 has artist 6: steps that only ever target song 20 raise song 21's
    logit (through the shared row) and leave song 22's (its own artist row, never a candidate) as it was."""
    tf.random.set_seed(2)
    model = dae(dropout=0.0, tied_output=False, artist_prior=1e6)  # every song's share about 1
    song_artists = [[i % 8] for i in range(30)]
    song_artists[20], song_artists[21], song_artists[22] = [5], [5, 1], [6]
    model.set_song_artists(song_artists, [3] * 30)
    assert model.song_artist.numpy()[[20, 21, 22]].tolist() == [5, 5, 6]
    trainable = {id(v) for v in model.trainable_variables}
    assert id(model.song_artist) not in trainable and id(model.artist_table) in trainable
    pad = lambda rows: tf.constant([r + [-1] * (3 - len(r)) for r in rows], tf.int32)  # noqa: E731
    b = {"songs_in": pad([[0, 1]]), "tags_in": pad([[0]]), "artists_in": pad([[0]]),
         "songs": pad([[0, 1, 20]]), "tags": pad([[0]]), "artists": pad([[0]])}
    before = model(b["songs_in"], b["tags_in"], b["artists_in"])[0].numpy()[0]
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss, _ = dae_loss(model, b, 0.0, 0.0, 0.0, training=True, item_loss="softmax", targets="hidden")
        grads = tape.gradient(loss, [model.artist_table])
        model.artist_table.assign_sub(0.5 * tf.convert_to_tensor(grads[0]))  # only the shared rows learn
    after = model(b["songs_in"], b["tags_in"], b["artists_in"])[0].numpy()[0]
    gain = after - before
    assert gain[21] > 0.5 and abs(gain[21] - gain[20]) < 1e-4  # the shared row moved both songs alike
    # song 22's own artist row took no gradient: its logit moved only with the other rows' push down
    assert gain[22] < gain[21] - 0.5


def test_artist_rows_score_the_same_whole_chunked_and_after_an_export_round_trip():
    from models.weights import assign_weights, weights_by_path

    tf.random.set_seed(3)
    model = dae(dropout=0.0, tied_output=False, artist_prior=2.0)
    model.set_song_artists([[i % 8] if i % 5 else [] for i in range(30)], list(range(30)))  # every 5th: no artist
    np.testing.assert_allclose(model.artist_share.numpy()[[0, 2, 18]], [1.0, 0.5, 0.1], rtol=1e-6)
    model.artist_table.assign(tf.random.normal(model.artist_table.shape))
    b = batch()
    whole = model(b["songs_in"], b["tags_in"], b["artists_in"])[0].numpy()
    h = model.encode(b["songs_in"], b["tags_in"], b["artists_in"])
    chunks = model.chunked_scores(h, 0, 7)
    np.testing.assert_allclose(np.concatenate([chunks.score(s, min(s + 7, 30)) for s in range(0, 30, 7)], axis=1),
                               whole, rtol=1e-5, atol=1e-5)
    plain = (model.output_rows(0).numpy() - model.artist_share.numpy()[:, None]
             * model.artist_table.numpy()[model.song_artist.numpy()])
    np.testing.assert_allclose(plain, model.output_table.numpy()[:30], atol=1e-6)
    assert (model.song_artist.numpy()[::5] == SIZES[2]).all()  # no artist: the shared "none" row
    loaded = dae(dropout=0.0, tied_output=False, artist_prior=2.0)  # as inference builds it: no vocabulary read
    assert assign_weights(loaded, weights_by_path(model)) is None
    np.testing.assert_allclose(loaded(b["songs_in"], b["tags_in"], b["artists_in"])[0].numpy(), whole, rtol=1e-6)


def test_an_export_made_before_the_artist_prior_loads_as_the_model_it_was():
    section = yaml.safe_load(DEFAULT_CONFIG.read_text())["model"]
    older = {k: v for k, v in section.items() if k != "artist_prior"}
    assert model_config(DAEConfig, Path("run"), {"model_config": older}).artist_prior == 0.0
    assert model_config(DAEConfig, Path("run"), {"model_config": {**older, "artist_prior": 3.0}}).artist_prior == 3.0
    with pytest.raises(ExportError, match="missing key"):  # only the added key has a stand-in
        model_config(DAEConfig, Path("run"), {"model_config": {k: v for k, v in older.items() if k != "hidden"}})
