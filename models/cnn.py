"""A VGG-style CNN over a song's mel-spectrogram: its tags (multi-label) and genres from its audio.

The second design this project follows stacks VGG blocks (3x3 convolutions, ReLU, 2x2 max pooling;
widths 64-64 / 128-128 / 256-256-256) on the [48, T] mel-spectrogram and ends in a 58,880 x 4,096 dense
layer before a 29,160-way sigmoid output: 277 million parameters, which did not fit its GPU. Here the
blocks are the same, but global average pooling over frequency and time replaces the dense layer, so the
model is as wide as its last block (256 at ``width`` 1.0) and the length of the input is free (training
crops and whole songs alike):

    mel [batch, 48, T]  -> standardised per song (mean 0, std 1 over all its bins and frames)
      -> block 1: conv3x3(64w) relu, conv3x3(64w) relu, maxpool 2x2       [batch, 24, T/2, 64w]
      -> block 2: conv3x3(128w) relu x 2, maxpool 2x2                      [batch, 12, T/4, 128w]
      -> block 3: conv3x3(256w) relu x 3, maxpool 2x2                      [batch, 6, T/8, 256w]
      -> global average pooling                                           [batch, C = 256w]: the embedding
      -> dropout -> tags: dense C -> n_tags (+ the genre prior, below; sigmoid); genres: dense C -> n_genres

``width`` multiplies every block's channels (1.0: the design's; 0.125: 8-8 / 16-16 / 32-32-32, what two
CPU cores train in the main job's time). Variables are float32; the convolutions compute in
``compute_dtype`` (float16 under mixed precision), the pooled vector, heads and loss in float32.

With ``genre_input`` the tag logits also get a learned *genre prior*: ``multi_hot(genres) @ G``, G
[n_genres, n_tags] (zeros at the start), the song's genres being metadata that song_meta.json holds for
every song, the cold ones included. The audio then has to explain what the genre does not: without it, the
CNN has to rediscover the genre from the spectrogram before it can guess a tag, and ranked below the tags
most popular in the song's genres (bench/results/cnn_small.json). The genre head still reads the audio
alone (it shapes the audio embedding that ``inference.audio`` compares songs by).

The loss is binary cross-entropy summed over the tag vocabulary for the songs that have label tags, plus
``genre_weight`` times the same over the genres for every song, each averaged over its songs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from models.config import ConfigError
from models.layers import Dense

DESIGN_WIDTHS = ((64, 64), (128, 128), (256, 256, 256))  # the design's channels per convolution, by block
PAD = -1


@dataclass(frozen=True)
class CNNConfig:
    """The ``model`` section of configs/cnn.yaml (its defaults and comments), stored in every export."""
    width: float  # multiplier on DESIGN_WIDTHS
    crop_frames: int  # frames of a random training crop (of the shards' fixed length)
    dropout: float  # on the pooled vector, in training
    genre_weight: float  # loss = tag BCE + genre_weight x genre BCE
    genre_input: bool  # the tag logits add a learned prior of the song's genres (metadata)

    def __post_init__(self):
        if self.width <= 0:
            raise ConfigError("model.width must be positive")
        if self.crop_frames < 8:
            raise ConfigError("model.crop_frames must be at least 8 (three 2x2 poolings)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout must be in [0, 1)")
        if self.genre_weight < 0:
            raise ConfigError("model.genre_weight must be >= 0")

    @property
    def channels(self) -> tuple:
        return tuple(tuple(max(1, round(c * self.width)) for c in block) for block in DESIGN_WIDTHS)


class Conv(tf.Module):
    """A 3x3 convolution with bias and ReLU, 'same' padding; He-normal weights [3, 3, c_in, c_out]."""

    def __init__(self, c_in: int, c_out: int, name: str):
        super().__init__(name=name)
        self.w = tf.Variable(tf.random.normal([3, 3, c_in, c_out], stddev=math.sqrt(2.0 / (9 * c_in))), name="w")
        self.b = tf.Variable(tf.zeros([c_out]), name="b")

    def __call__(self, x):
        """[batch, H, W, c_in] -> [batch, H, W, c_out], in x's dtype."""
        y = tf.nn.conv2d(x, tf.cast(self.w, x.dtype), strides=1, padding="SAME")
        return tf.nn.relu(y + tf.cast(self.b, x.dtype))


class MelCNN(tf.Module):
    def __init__(self, n_tags: int, n_genres: int, *, channels: tuple, dropout: float = 0.0,
                 genre_input: bool = False, compute_dtype=tf.float32, name: str = "cnn"):
        super().__init__(name=name)
        self.n_tags, self.n_genres, self.dropout, self.compute_dtype = n_tags, n_genres, dropout, compute_dtype
        self.blocks, c_in = [], 1
        for b, block in enumerate(channels):
            layers = []
            for i, c_out in enumerate(block):
                layers.append(Conv(c_in, c_out, name=f"block{b}_conv{i}"))
                c_in = c_out
            self.blocks.append(layers)
        self.dim = c_in
        self.tag_head = Dense(c_in, n_tags, name="tags")
        self.genre_head = Dense(c_in, n_genres, name="genres")
        # [n_genres, n_tags]: each genre's additive tag logits (the genre prior), or None
        self.genre_tags = tf.Variable(tf.zeros([n_genres, n_tags]), name="genre_tags") if genre_input else None

    @classmethod
    def from_config(cls, config: CNNConfig, n_tags: int, n_genres: int, compute_dtype=tf.float32) -> "MelCNN":
        return cls(n_tags, n_genres, channels=config.channels, dropout=config.dropout,
                   genre_input=config.genre_input, compute_dtype=compute_dtype)

    def embed(self, mel):
        """[batch, 48, T] float32 log-mel -> [batch, C] float32, the pooled last block (T >= 8)."""
        mean, variance = tf.nn.moments(mel, axes=[1, 2], keepdims=True)
        x = tf.cast(((mel - mean) * tf.math.rsqrt(variance + 1e-5))[..., None], self.compute_dtype)
        for block in self.blocks:
            for conv in block:
                x = conv(x)
            x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        return tf.cast(tf.reduce_mean(x, axis=[1, 2]), tf.float32)

    def tag_logits(self, pooled, genres):
        """pooled [batch, C] and genres [batch, m] (indices padded with -1) -> [batch, n_tags] float32."""
        logits = self.tag_head(pooled)
        if self.genre_tags is not None:
            logits += tf.matmul(multi_hot(genres, self.n_genres), self.genre_tags)
        return logits

    def logits(self, mel, genres, training: bool = False):
        """mel [batch, 48, T], genres [batch, m] -> (tag logits [batch, n_tags], genre logits [batch, n_genres]),
        float32 (the genre logits from the audio alone)."""
        pooled = self.embed(mel)
        if training and self.dropout > 0:
            pooled = tf.nn.dropout(pooled, rate=self.dropout)
        return self.tag_logits(pooled, genres), self.genre_head(pooled)

    def loss(self, batch: dict, genre_weight: float):
        """(loss, {"tags", "genres"}) of a batch: ``mel`` [batch, 48, T], ``tags`` [batch, k] and ``genres``
        [batch, m] label indices padded with -1."""
        tag_logits, genre_logits = self.logits(batch["mel"], batch["genres"], training=True)
        tags, genres = multi_hot(batch["tags"], self.n_tags), multi_hot(batch["genres"], self.n_genres)
        labelled = tf.cast(tf.reduce_any(batch["tags"] != PAD, axis=1), tf.float32)
        tag_bce = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=tags, logits=tag_logits), axis=1)
        tag_loss = tf.reduce_sum(tag_bce * labelled) / tf.maximum(tf.reduce_sum(labelled), 1.0)
        genre_loss = tf.reduce_mean(tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=genres, logits=genre_logits), axis=1))
        return tag_loss + genre_weight * genre_loss, {"tags": tag_loss, "genres": genre_loss}


def multi_hot(indices, depth: int):
    """[batch, k] indices padded with -1 -> [batch, depth] float32 with 1 at each index."""
    return tf.reduce_max(tf.one_hot(indices, depth, dtype=tf.float32), axis=1)


def parameter_count(config: CNNConfig, n_tags: int, n_genres: int) -> int:
    """Trainable parameters of the model a config builds (convolutions, biases, both heads, the genre prior)."""
    total, c_in = 0, 1
    for block in config.channels:
        for c_out in block:
            total += 9 * c_in * c_out + c_out
            c_in = c_out
    prior = n_genres * n_tags if config.genre_input else 0
    return total + (c_in + 1) * (n_tags + n_genres) + prior
