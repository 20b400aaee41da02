"""Word2Vec over playlists: skip-gram (or CBOW) with negative sampling in one token space.

Tokens are the work directory's songs ``[0, S)``, tags ``[S, S + T)`` and title pieces
``[S + T, S + T + P)`` (the tokenizer's pieces); each training playlist is a "sentence", and since a
playlist is a set, every other token of it is context (no window). The input pipeline
(data/pipeline.py, mode ``word2vec``) draws per playlist ``pairs`` examples: a *target* song or tag of
the playlist, and ``inputs`` other tokens of it (1 for skip-gram, ``cbow_window`` for CBOW, whose input is
their mean), after frequency subsampling; plus ``negatives`` tokens per example from the songs' and
tags' unigram^0.75 distribution. Title pieces are inputs only (a question's title then points at songs
and tags), never targets or negatives.

Two tables, as in Mikolov et al. (2013): ``inputs`` [S + T + P, d] (the vectors that are looked up and,
normalised, exported for similarity) and ``outputs`` [S + T, d] (what a target is scored with). The loss is

    -log σ(u · w_target) - Σ_negatives log σ(-u · w_negative),   u = mean of the input vectors,

averaged over the batch's real examples. Both tables are read with ``tf.gather``, so their gradients are
``tf.IndexedSlices`` holding only the rows a batch touched (Horovod allgathers them unless
``hardware.sparse_as_dense``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from models.config import ConfigError

PAD = -1
MODES = ("skipgram", "cbow")


@dataclass(frozen=True)
class Word2VecConfig:
    """The ``model`` section of configs/word2vec.yaml (its defaults and comments), stored in every export."""
    mode: str  # skipgram | cbow
    dim: int  # d
    cbow_window: int  # CBOW: other tokens of the playlist averaged into the input
    negatives: int  # negatives per example
    pairs: int  # examples drawn per playlist and epoch
    subsample: float  # word2vec's t: a token of frequency f is kept with probability min(1, sqrt(t/f) + t/f)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"model.mode must be one of {', '.join(MODES)}")
        for key in ("dim", "cbow_window", "negatives", "pairs"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive")
        if self.subsample < 0:
            raise ConfigError("model.subsample must be >= 0 (0: no subsampling)")

    @property
    def inputs_per_example(self) -> int:
        return 1 if self.mode == "skipgram" else self.cbow_window


class Word2Vec(tf.Module):
    def __init__(self, n_songs: int, n_tags: int, n_pieces: int, *, dim: int, counts=None, name: str = "word2vec"):
        """Vocabulary sizes and d; the other :class:`Word2VecConfig` keys shape the pipeline, not the model.
        ``counts`` [S + T]: the songs' and tags' training counts, whose unigram^0.75 distribution the
        negatives come from (see :meth:`recommend_logits`); restored from the export when not given."""
        super().__init__(name=name)
        self.n_songs, self.n_tags, self.n_pieces, self.dim = n_songs, n_tags, n_pieces, dim
        # word2vec's initialisation: inputs uniform in ±0.5/d, outputs zero
        self.inputs = tf.Variable(tf.random.uniform([n_songs + n_tags + n_pieces, dim], -0.5 / dim, 0.5 / dim),
                                  name="inputs")
        self.outputs = tf.Variable(tf.zeros([n_songs + n_tags, dim]), name="outputs")
        noise = np.zeros(n_songs + n_tags, np.float32) if counts is None else log_noise(counts)
        self.log_noise = tf.Variable(noise, trainable=False, name="log_noise")

    @classmethod
    def from_config(cls, model_config: Word2VecConfig, sizes: dict, counts=None) -> "Word2Vec":
        """The model of a config's ``model`` section over a work directory's ``sizes`` (its manifest's)."""
        return cls(sizes["songs"], sizes["tags"], sizes["title_pieces"], dim=model_config.dim, counts=counts)

    def input_vectors(self, tokens):
        """[batch, ..., n] token ids padded with -1 -> [batch, ..., d] mean of their input vectors (0 if none)."""
        mask = tf.cast(tokens != PAD, tf.float32)[..., None]
        vectors = tf.gather(self.inputs, tf.maximum(tokens, 0)) * mask
        return tf.reduce_sum(vectors, axis=-2) / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)

    def loss(self, batch: dict):
        """(loss, {"positive", "negative"}) on a ``word2vec`` batch: ``inputs`` [batch, pairs, m], ``targets``
        [batch, pairs] and ``negatives`` [batch, pairs, k] token ids, int32, -1 where a playlist had fewer
        examples."""
        u = self.input_vectors(batch["inputs"])  # [batch, pairs, d]
        real = tf.cast(batch["targets"] != PAD, tf.float32)
        w_target = tf.gather(self.outputs, tf.maximum(batch["targets"], 0))  # [batch, pairs, d]
        w_negative = tf.gather(self.outputs, tf.maximum(batch["negatives"], 0))  # [batch, pairs, k, d]
        positive = tf.math.log_sigmoid(tf.reduce_sum(u * w_target, -1))
        negative = tf.reduce_sum(tf.math.log_sigmoid(-tf.einsum("bpd,bpkd->bpk", u, w_negative)), -1)
        n = tf.maximum(tf.reduce_sum(real), 1.0)
        positive, negative = -tf.reduce_sum(positive * real) / n, -tf.reduce_sum(negative * real) / n
        return positive + negative, {"positive": positive, "negative": negative}

    def question_tokens(self, songs, tags, title):
        """[batch, *] songs, tags and title pieces (vocabulary indices, padded -1) -> [batch, n] token ids."""
        shift = lambda ids, offset: tf.where(ids == PAD, PAD, ids + offset)  # noqa: E731
        return tf.concat([songs, shift(tags, self.n_songs), shift(title, self.n_songs + self.n_tags)], axis=1)

    def recommend_logits(self, songs, tags, title):
        """(songs [batch, S], tags [batch, T]) log-scores of a question: the mean input vector u of what it
        gives, and for every item o ``u · w_o + log P_noise(o)``. Negative sampling fits u · w_o to
        log P(o | u) / (k P_noise(o)) (Levy & Goldberg 2014: a shifted PMI, which favours rare items); adding
        the log of the negatives' distribution back makes the score log P(o | u) up to a constant."""
        u = self.input_vectors(self.question_tokens(songs, tags, title))
        scores = tf.matmul(u, self.outputs, transpose_b=True) + self.log_noise
        return scores[:, : self.n_songs], scores[:, self.n_songs:]


def log_noise(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """log of the negatives' distribution, unigram^power over the songs and tags (counts of 0 count as 1)."""
    weights = np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** power
    return np.log(weights / weights.sum()).astype(np.float32)


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): cosine similarity is then a dot product."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
