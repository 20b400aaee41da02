"""The losses every model here trains with, and the target helpers they share (the DAE, the title BERT's
fine-tuning, and the models to come). Ids arrive as the pipeline pads them (data/pipeline.py: -1)."""

from __future__ import annotations

import tensorflow as tf

PAD = -1


def multi_hot(ids, depth: int):
    """int32 ids [batch, length] padded with -1 -> float32 0/1 targets [batch, depth]."""
    valid = tf.where(ids != PAD)
    index = tf.stack([valid[:, 0], tf.cast(tf.gather_nd(ids, valid), tf.int64)], axis=1)
    return tf.scatter_nd(index, tf.ones([tf.shape(index)[0]]), tf.cast([tf.shape(ids)[0], depth], tf.int64))


def bce(logits, targets):
    """The mean sigmoid cross-entropy over every entry of float32 ``logits`` and 0/1 ``targets`` [batch, n]
    (the reference design's item loss): a scalar."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))


def softmax_xent(logits, targets):
    """Multinomial log-likelihood of the target set (Mult-DAE/VAE, Liang et al. 2018): for float32 ``logits``
    and 0/1 ``targets`` [batch, n], the mean over rows of -sum_s y_s log softmax(logits)_s / |y|, a scalar.
    Rows without targets count zero (in the mean's denominator too)."""
    count = tf.reduce_sum(targets, axis=1)
    per_row = -tf.reduce_sum(targets * tf.nn.log_softmax(logits, axis=1), axis=1) / tf.maximum(count, 1.0)
    return tf.reduce_mean(per_row)


ITEM_LOSSES = {"bce": bce, "softmax": softmax_xent}


def ranking_bce(logits, targets, k: int = 100):
    """BCE over each row's current top-k entries only (the reference's late-training ranking term):
    ``logits``, ``targets`` [batch, n] -> a scalar, the mean over the batch x min(k, n) entries."""
    top = tf.math.top_k(logits, k=tf.minimum(k, tf.shape(logits)[1]))
    return bce(top.values, tf.gather(targets, top.indices, batch_dims=1))


def hide_given(logits, given_ids):
    """``logits`` [batch, n] with the given items' entries (``given_ids`` [batch, length], padded -1) set to
    -1e9: the items a question already holds are never an answer, in training as at inference."""
    return logits - 1e9 * tf.minimum(multi_hot(given_ids, tf.shape(logits)[1]), 1.0)


def recommendation_loss(song_logits, tag_logits, songs, tags, item_loss: str, tag_weight: float,
                        rank_weight: float = 0.0, rank_k: int = 100):
    """(total, {part: value}) for one batch of song and tag predictions: songs + tag_weight x tags
    (+ rank_weight x the ranking term over each row's top ``rank_k`` songs when it is not 0). ``song_logits`` [batch, n_songs] and
    ``tag_logits`` [batch, n_tags] float32; ``songs``/``tags`` [batch, length] int32 target ids padded -1;
    ``item_loss``: a key of :data:`ITEM_LOSSES`."""
    loss = ITEM_LOSSES[item_loss]
    song_targets = multi_hot(songs, tf.shape(song_logits)[1])
    parts = {"songs": loss(song_logits, song_targets), "tags": loss(tag_logits, multi_hot(tags, tf.shape(tag_logits)[1]))}
    total = parts["songs"] + tag_weight * parts["tags"]
    if rank_weight:
        parts["ranking"] = ranking_bce(song_logits, song_targets, rank_k)
        total += rank_weight * parts["ranking"]
    return total, parts
