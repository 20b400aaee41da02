"""Sampled softmax over a large item head (Jean et al. 2015; Yi et al., RecSys 2019, "sampling-bias-corrected").

Each step scores, for every playlist of the batch, the *candidates*: every item some playlist of the batch
holds (its positives and, for the other rows, in-batch negatives) plus K negatives shared by the batch,
drawn from the items' training counts raised to ``alpha``. A candidate's logit is corrected by ``-log Q``,
Q the chance that the item is among a step's candidates at all, so that the softmax over the candidates
estimates the softmax over the whole vocabulary without favouring popular items. Targets are built from
ids: no ``[batch, n_items]`` tensor exists in a step, and the output table's gradient touches only the
candidates' rows (an ``IndexedSlices``, which Horovod allgathers as rows with ``sparse_as_dense: false``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from models.losses import PAD


def log_inclusion(counts: np.ndarray, playlists: int, batch: int, negatives: int, alpha: float):
    """For items seen in ``counts`` [n] of ``playlists`` training playlists: (log Q [n], log q [n]) float32.

    q is the negatives' sampling distribution (counts^alpha, normalised); Q the chance an item is a candidate
    of a step: held by one of the ``batch`` playlists (each holds it with chance count / playlists) or drawn
    among the ``negatives`` draws from q."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    q = counts ** alpha / np.sum(counts ** alpha)
    held = np.minimum(counts / max(playlists, 1), 1.0 - 1e-12)
    not_in_batch = np.exp(batch * np.log1p(-held))
    not_drawn = np.exp(negatives * np.log1p(-q))
    inclusion = np.maximum(1.0 - not_in_batch * not_drawn, 1e-30)
    return np.log(inclusion).astype(np.float32), np.log(q).astype(np.float32)


class Candidates(NamedTuple):
    """A step's candidates for one head: ``ids`` [C] unique item ids; ``wanted`` [batch, C] float32 1 where
    the row's target holds the candidate (given items left out when the targets are the hidden ones);
    ``given`` [batch, C] float32 1 where the row's input holds it."""
    ids: tf.Tensor
    wanted: tf.Tensor
    given: tf.Tensor


def _scatter_index(ids, positions):
    """[number of valid entries, 2] int64 (row, candidate column) of ``ids`` [batch, L] (padded -1), whose
    valid entries, row-major, are the candidates ``positions``."""
    where = tf.where(ids != PAD)
    index = tf.stack([where[:, 0], tf.cast(positions, tf.int64)], axis=1)
    return index


def candidates(targets, given, negatives, hidden: bool) -> Candidates:
    """The candidates of a batch: ``targets`` [batch, L] and ``given`` [batch, G] int32 item ids padded -1 (the
    playlists' items and the corrupted inputs), ``negatives`` [K] int32 sampled ids. ``hidden``: the given
    items are no target of their own row."""
    flat_targets = tf.boolean_mask(targets, targets != PAD)
    flat_given = tf.boolean_mask(given, given != PAD)
    ids, column = tf.unique(tf.concat([flat_targets, flat_given, negatives], axis=0))
    n_targets, n_given = tf.size(flat_targets), tf.size(flat_given)
    shape = tf.cast(tf.stack([tf.shape(targets)[0], tf.size(ids)]), tf.int64)
    target_index = _scatter_index(targets, column[:n_targets])
    given_index = _scatter_index(given, column[n_targets:n_targets + n_given])
    wanted = tf.minimum(tf.scatter_nd(target_index, tf.ones([n_targets]), shape), 1.0)
    given_hot = tf.minimum(tf.scatter_nd(given_index, tf.ones([n_given]), shape), 1.0)
    if hidden:
        wanted = tf.maximum(wanted - given_hot, 0.0)
    return Candidates(ids, wanted, given_hot)


class SampledOutput:
    """The sampling state of a model's large heads: per head whose vocabulary is larger than ``negatives``,
    the log inclusion chance of each item and the negatives' log sampling weights (constants)."""

    def __init__(self, counts: dict, playlists: int, batch: int, negatives: int, alpha: float):
        """``counts``: {head name: training counts [n] of its items, in vocabulary order}; ``batch``: playlists
        per rank and step."""
        self.negatives = negatives
        self.heads = {}
        for name, head_counts in counts.items():
            if len(head_counts) > negatives:
                log_q, log_weights = log_inclusion(head_counts, playlists, batch, negatives, alpha)
                self.heads[name] = (tf.constant(log_q), tf.constant(log_weights[None, :]))

    def sampled(self, name: str) -> bool:
        return name in self.heads

    def draw(self, name: str):
        """[K] int32 ids drawn with replacement from the head's sampling distribution."""
        return tf.cast(tf.random.categorical(self.heads[name][1], self.negatives)[0], tf.int32)

    def correction(self, name: str, ids):
        """[C] float32 log Q of the candidate ``ids``, to subtract from their logits."""
        return tf.gather(self.heads[name][0], ids)
