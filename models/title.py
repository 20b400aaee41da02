"""The title BERT: a Transformer encoder over sentencepiece title pieces.

Input ``[songs CLS, tags CLS] + pieces + [SEP]``, padded: piece embeddings (the tokenizer's pieces,
specials included) scaled by sqrt(hidden) plus learned position embeddings, no segment embeddings;
the pre-norm encoder of models/layers.py with ReLU FFNs (the reference found ReLU better here).

* Pretraining (``mlm_logits``): masked-piece prediction, tied to the piece embeddings, at the chosen
  positions only when they are given (the piece softmax is most of the cost at every position).
* Fine-tuning (``recommend_logits``): the songs-CLS output scores every vocabulary song and the tags-CLS
  output every tag, through a separate (songs + tags) x hidden output table with biases. Only the two
  CLS positions are computed in the last block.

Piece batches are the pipeline's (data/pipeline.py): piece ids padded with -1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from models.config import ConfigError, as_dict
from models.layers import Encoder, check_encoder_config
from models.losses import recommendation_loss

PAD = -1


@dataclass(frozen=True)
class TitleConfig:
    """The ``model`` section of configs/title.yaml (its defaults and comments), stored in every title export."""
    hidden: int
    blocks: int
    heads: int
    ffn: int
    activation: str
    dropout: float
    max_length: int  # tokens: [songs CLS, tags CLS] + pieces + [SEP]

    def __post_init__(self):
        check_encoder_config(self)
        if self.max_length < 4:
            raise ConfigError("model.max_length must be at least 4 (two CLS tokens, a piece and SEP)")


class TitleBERT(tf.Module):
    def __init__(self, n_pieces: int, n_songs: int, n_tags: int, songs_cls_id: int, tags_cls_id: int, sep_id: int,
                 pad_id: int, *, hidden: int, blocks: int, heads: int, ffn: int, max_length: int, activation: str,
                 dropout: float, compute_dtype=tf.float32, name: str = "title_bert"):
        """The tokenizer's piece count and special ids, the vocabulary sizes, then the hyper-parameters of
        :class:`TitleConfig` (configs/title.yaml holds their defaults)."""
        super().__init__(name=name)
        self.hidden, self.max_length, self.compute_dtype = hidden, max_length, compute_dtype
        self.songs_cls_id, self.tags_cls_id, self.sep_id, self.pad_id = songs_cls_id, tags_cls_id, sep_id, pad_id
        self.n_songs, self.n_tags = n_songs, n_tags
        self.pieces = tf.Variable(tf.random.normal([n_pieces, hidden], stddev=hidden ** -0.5), name="pieces")
        self.positions = tf.Variable(tf.random.normal([max_length, hidden], stddev=0.02), name="positions")
        self.piece_bias = tf.Variable(tf.zeros([n_pieces]), name="piece_bias")
        self.output_table = tf.Variable(tf.random.normal([n_songs + n_tags, hidden], stddev=hidden ** -0.5), name="output")
        self.output_bias = tf.Variable(tf.zeros([n_songs + n_tags]), name="output_bias")
        self.encoder = Encoder(hidden, blocks, heads, ffn, activation, dropout)

    @classmethod
    def from_config(cls, model_config: TitleConfig, sizes: dict, tokenizer, compute_dtype=tf.float32) -> "TitleBERT":
        """The title BERT of a config's ``model`` section (configs/title.yaml, or an export's ``model_config``
        read with ``parse_section(TitleConfig, ...)``) over a work directory's vocabulary ``sizes`` and its
        title tokenizer (data/title.py: the piece count and the special pieces' ids)."""
        return cls(tokenizer.size, sizes["songs"], sizes["tags"], tokenizer.songs_cls_id, tokenizer.tags_cls_id,
                   tokenizer.sep_id, tokenizer.pad_id, **as_dict(model_config), compute_dtype=compute_dtype)

    @property
    def max_pieces(self) -> int:
        """Title pieces the model reads: max_length less the two CLS tokens and SEP; later pieces are cut."""
        return self.max_length - 3

    def tokens(self, pieces):
        """[batch, length] pieces padded with -1 -> [batch, 2 + length + 1] token ids with CLS and SEP."""
        pieces = pieces[:, : self.max_pieces]
        batch, length = tf.shape(pieces)[0], tf.shape(pieces)[1]
        lengths = tf.reduce_sum(tf.cast(pieces != PAD, tf.int32), axis=1)
        body = tf.concat([tf.where(pieces == PAD, self.pad_id, pieces), tf.fill([batch, 1], self.pad_id)], axis=1)
        body = tf.where(tf.range(length + 1)[None, :] == lengths[:, None], self.sep_id, body)  # SEP after the last piece
        cls = tf.tile(tf.constant([[self.songs_cls_id, self.tags_cls_id]], tf.int32), [batch, 1])
        return tf.concat([cls, tf.cast(body, tf.int32)], axis=1)

    def encode(self, pieces, training: bool, outputs: int | None = None):
        ids = self.tokens(pieces)
        mask = ids != self.pad_id
        length = tf.shape(ids)[1]
        x = tf.gather(self.pieces, ids) * math.sqrt(self.hidden) + self.positions[None, :length]
        x *= tf.cast(mask, tf.float32)[..., None]
        return tf.cast(self.encoder(tf.cast(x, self.compute_dtype), mask, training, outputs=outputs), tf.float32)

    def mlm_logits(self, pieces, training: bool = False, positions=None):
        """[batch, length, n_pieces] logits for each input piece position (CLS and SEP positions dropped), or
        [batch, predictions, n_pieces] at ``positions`` ([batch, predictions] piece indices padded with -1)."""
        h = self.encode(pieces, training)
        length = tf.minimum(tf.shape(pieces)[1], self.max_pieces)
        h = h[:, 2: 2 + length]
        if positions is not None:
            h = tf.gather(h, tf.clip_by_value(positions, 0, length - 1), batch_dims=1)
        return tf.tensordot(h, self.pieces, [[2], [1]]) + self.piece_bias

    def mlm_labels(self, labels, positions):
        """The labels that go with ``mlm_logits(..., positions=positions)`` (:func:`labels_at`)."""
        return labels_at(labels, positions, self.max_pieces)

    def recommend_logits(self, pieces, training: bool = False):
        """(songs [batch, n_songs], tags [batch, n_tags]) logits from the two CLS outputs."""
        h = self.encode(pieces, training, outputs=2)
        songs = tf.matmul(h[:, 0], self.output_table[: self.n_songs], transpose_b=True) + self.output_bias[: self.n_songs]
        tags = tf.matmul(h[:, 1], self.output_table[self.n_songs:], transpose_b=True) + self.output_bias[self.n_songs:]
        return songs, tags


def labels_at(labels, positions, max_pieces: int):
    """The pipeline's full-length ``title_labels`` at its ``title_positions`` (-1 for padding and for positions
    past ``max_pieces``, which the model truncates away): the labels for ``mlm_logits(..., positions=...)``."""
    valid = (positions >= 0) & (positions < tf.minimum(tf.shape(labels)[1], max_pieces))
    picked = tf.gather(labels, tf.clip_by_value(positions, 0, tf.shape(labels)[1] - 1), batch_dims=1)
    return tf.where(valid, picked, PAD)


def mlm_loss(logits, labels, label_smoothing: float = 0.1):
    """Softmax cross-entropy with label smoothing over the chosen positions (labels -1 elsewhere), and accuracy."""
    labels = labels[:, : tf.shape(logits)[1]]
    chosen = labels != PAD
    depth = tf.shape(logits)[-1]
    targets = tf.one_hot(tf.where(chosen, labels, 0), depth)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / tf.cast(depth, tf.float32)
    per_position = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
    weights = tf.cast(chosen, tf.float32)
    loss = tf.reduce_sum(per_position * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
    correct = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == labels, tf.float32) * weights
    return loss, tf.reduce_sum(correct) / tf.maximum(tf.reduce_sum(weights), 1.0)


def pretrain_loss(model: TitleBERT, batch: dict, label_smoothing: float, training: bool = True):
    """(loss, {"mlm", "accuracy"}) of masked-piece prediction on a ``title_mlm`` batch (``title_in``,
    ``title_labels`` [batch, pieces] and ``title_positions`` [batch, predictions], int32, padded -1): the
    piece softmax computed at the chosen positions only."""
    positions = batch["title_positions"]
    logits = model.mlm_logits(batch["title_in"], training, positions=positions)
    value, accuracy = mlm_loss(logits, model.mlm_labels(batch["title_labels"], positions), label_smoothing)
    return value, {"mlm": value, "accuracy": accuracy}


def mlm_sums(model: TitleBERT, batches, label_smoothing: float) -> list[float]:
    """[loss x chosen, correct, chosen] summed over ``batches`` (masked titles, as in :func:`pretrain_loss`):
    what pretraining validation adds up over ranks before dividing by the chosen pieces."""
    total = [0.0, 0.0, 0.0]
    for batch in batches:
        positions = batch["title_positions"]
        labels = model.mlm_labels(batch["title_labels"], positions)
        value, accuracy = mlm_loss(model.mlm_logits(batch["title_in"], False, positions=positions), labels,
                                   label_smoothing)
        chosen = float(tf.reduce_sum(tf.cast(labels >= 0, tf.float32)))
        total = [total[0] + float(value) * chosen, total[1] + float(accuracy) * chosen, total[2] + chosen]
    return total


def finetune_loss(model: TitleBERT, batch: dict, item_loss: str, tag_weight: float, rank_weight: float = 0.0,
                  training: bool = True, rank_k: int = 100):
    """(total, {part: value}) of fine-tuning on a pipeline batch (``title`` [batch, pieces], ``songs``,
    ``tags`` [batch, length] int32, padded -1): the playlist's songs and tags predicted from its title, with
    the same item losses as the DAE (models/losses.py)."""
    songs, tags = model.recommend_logits(batch["title"], training=training)
    return recommendation_loss(songs, tags, batch["songs"], batch["tags"], item_loss, tag_weight, rank_weight, rank_k)
