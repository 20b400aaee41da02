"""The title BERT's input layout, its CLS-only fine-tuning path and the MLM loss."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.title import TitleBERT, mlm_loss

SONGS_CLS, TAGS_CLS, SEP, PAD_ID = 2, 3, 4, 0


def model(**kw):
    return TitleBERT(n_pieces=50, n_songs=30, n_tags=7, songs_cls_id=SONGS_CLS, tags_cls_id=TAGS_CLS, sep_id=SEP,
                     pad_id=PAD_ID, **{**dict(hidden=16, blocks=2, heads=2, ffn=32, max_length=12, activation="relu",
                                           dropout=0.0), **kw})


def test_tokens_put_cls_first_and_sep_after_the_last_piece():
    pieces = tf.constant([[10, 11, 12], [20, -1, -1]])
    assert model().tokens(pieces).numpy().tolist() == [[2, 3, 10, 11, 12, 4], [2, 3, 20, 4, 0, 0]]
    long = tf.fill([1, 30], 9)  # truncated to max_length - 3 pieces, then SEP
    assert model().tokens(long).shape[1] == 12


def test_shapes_and_cls_only_path_is_exact():
    m = model()
    pieces = tf.constant([[10, 11, 12], [20, -1, -1]])
    songs, tags = m.recommend_logits(pieces)
    assert songs.shape == (2, 30) and tags.shape == (2, 7)
    full = m.encode(pieces, False)[:, :2]
    np.testing.assert_allclose(full.numpy(), m.encode(pieces, False, outputs=2).numpy(), atol=1e-5)
    assert m.mlm_logits(pieces).shape == (2, 3, 50)


def test_mlm_at_chosen_positions_equals_the_full_logits_there():
    from models.title import labels_at

    m = model()
    pieces = tf.constant([[10, 11, 12, 13], [20, 21, -1, -1]])
    labels = tf.constant([[-1, 31, -1, 33], [40, -1, -1, -1]])
    positions = tf.constant([[1, 3], [0, -1]])
    full = m.mlm_logits(pieces).numpy()
    at = m.mlm_logits(pieces, positions=positions).numpy()
    np.testing.assert_allclose(at[0], full[0, [1, 3]], atol=1e-5)
    np.testing.assert_allclose(at[1, 0], full[1, 0], atol=1e-5)
    assert labels_at(labels, positions, 50).numpy().tolist() == [[31, 33], [40, -1]]
    assert labels_at(labels, positions, 2).numpy().tolist() == [[31, -1], [40, -1]]  # past the truncation: dropped
    assert m.mlm_labels(labels, positions).numpy().tolist() == labels_at(labels, positions, m.max_pieces).numpy().tolist()


def test_padding_does_not_change_a_title_s_outputs():
    m = model()
    alone = m.recommend_logits(tf.constant([[20]]))[0]
    padded = m.recommend_logits(tf.constant([[20, -1, -1, -1]]))[0]
    np.testing.assert_allclose(alone.numpy(), padded.numpy(), atol=1e-5)


def test_mlm_loss_counts_chosen_positions_only():
    logits = tf.constant([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])
    labels = tf.constant([[0, -1]])
    loss, accuracy = mlm_loss(logits, labels, label_smoothing=0.0)
    expected = -np.log(np.exp(5.0) / (np.exp(5.0) + 2))
    assert float(loss) == pytest.approx(expected, rel=1e-5) and float(accuracy) == 1.0
    smoothed, _ = mlm_loss(logits, labels, label_smoothing=0.1)
    assert float(smoothed) > float(loss)
