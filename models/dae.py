"""The denoising set autoencoder (DAE) over a playlist's songs, tags and artists.

Input tokens ``[songs CLS, tags CLS, artists CLS] + songs + tags + artists`` from ONE embedding table
(rows: songs, tags, artists, then the three CLS tokens and PAD), init N(0, hidden^-0.5), scaled by
sqrt(hidden), pads zeroed; no position or segment embeddings (the input is a set). With ``title=True``
(a departure from the reference) the title's sentencepiece pieces are a fourth segment of the same set,
with rows of their own after the artists': a question that gives only its title is no longer empty.
A pre-norm Transformer encoder; the songs-CLS output scores every song as ``h · E_songsᵀ + b`` (output weights
tied to the input table, or with ``tied_output=False`` a table of their own), tags-CLS every tag,
artists-CLS every artist; sigmoid probabilities. With ``artist_prior=k > 0`` (a departure) a song seen in n
training playlists has as output row its own row plus ``k / (k + n)`` times its first artist's row of a
table shared by the artist's songs: a rarely seen song is scored through what its artist's other songs
taught, an often seen one by its own row (the song -> artist index and the shares are non-trainable variables
of the model, set by the trainer from the vocabulary and exported with the weights).

Batches are the pipeline's (data/pipeline.py): vocabulary indices padded with -1. With
``compute_dtype=tf.float16`` the encoder runs in half precision; embeddings, heads and loss stay float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from models.config import ConfigError, as_dict
from models.layers import Encoder, check_encoder_config
from models.losses import ITEM_LOSSES, PAD, hide_given, multi_hot, ranking_bce, softmax_xent
from models.ranking import ChunkedScores
from models.sampled import SampledOutput, candidates


@dataclass(frozen=True)
class DAEConfig:
    """The ``model`` section of configs/dae.yaml (its defaults and comments), stored in every DAE export."""
    hidden: int  # d: embedding and hidden size
    blocks: int  # Transformer blocks
    heads: int  # attention heads (hidden must divide by them)
    ffn: int  # feed-forward width
    activation: str  # gelu | relu
    dropout: float  # in [0, 1)
    tied_output: bool  # the output heads score with the input table (else a table of their own)
    title: bool  # the title's pieces are a fourth input segment
    artist_prior: float  # k: a song seen n times adds k / (k + n) of its first artist's shared row; 0: none

    def __post_init__(self):
        check_encoder_config(self)
        if self.artist_prior < 0:
            raise ConfigError("model.artist_prior must be 0 (off) or positive")


class DAE(tf.Module):
    def __init__(self, n_songs: int, n_tags: int, n_artists: int, *, hidden: int, blocks: int, heads: int, ffn: int,
                 activation: str, dropout: float, tied_output: bool, title: bool, artist_prior: float = 0.0,
                 n_pieces: int = 0, compute_dtype=tf.float32, name: str = "dae"):
        """Sizes of the vocabularies, then the hyper-parameters of :class:`DAEConfig` (configs/dae.yaml holds
        their defaults). ``title``: read the title's pieces (ids in [0, n_pieces), the work directory's
        tokenizer) too."""
        super().__init__(name=name)
        if title and n_pieces <= 0:
            raise ValueError("a DAE that reads titles needs the tokenizer's piece count (n_pieces > 0)")
        self.sizes = (n_songs, n_tags, n_artists)
        self.offsets = (0, n_songs, n_songs + n_tags)
        first_special = n_songs + n_tags + n_artists
        self.piece_offset = first_special if title else None  # the title pieces' first row
        first_special += n_pieces if title else 0
        self.cls_ids = tf.constant([first_special, first_special + 1, first_special + 2], tf.int32)
        self.pad_id = first_special + 3
        self.hidden, self.compute_dtype = hidden, compute_dtype
        self.embedding = tf.Variable(tf.random.normal([self.pad_id + 1, hidden], stddev=hidden ** -0.5), name="embedding")
        # the output heads' item rows [songs + tags + artists, hidden]: the input table's (tied, the reference)
        # or a table of their own (untied: input and output roles of an item learnt apart)
        self.output_table = None if tied_output else tf.Variable(
            tf.random.normal([sum(self.sizes), hidden], stddev=hidden ** -0.5), name="output_table")
        # artist_prior: song i's output row adds artist_share[i] x artist_table[song_artist[i]]; row n_artists stands
        # for "no artist in the vocabulary" (where song_artist points until set_song_artists); zeros, so an
        # untrained model's songs are scored by their own rows alone
        self.artist_prior = artist_prior
        shared = artist_prior > 0
        self.song_artist = tf.Variable(tf.fill([n_songs], n_artists), trainable=False, name="song_artist") if shared else None
        self.artist_share = tf.Variable(tf.ones([n_songs]), trainable=False, name="artist_share") if shared else None
        self.artist_table = tf.Variable(tf.zeros([n_artists + 1, hidden]), name="artist_table") if shared else None
        self.biases = [tf.Variable(tf.zeros([n]), name=f"bias_{kind}") for n, kind in zip(self.sizes, ("songs", "tags", "artists"))]
        self.encoder = Encoder(hidden, blocks, heads, ffn, activation, dropout)

    def start_from_popularity(self, counts: dict, playlists: int) -> None:
        """The output heads set to rank by popularity before training: each head's bias ``log(count /
        playlists)`` of its items (``counts``: {songs, tags, artists: [n_items] training counts}) and, with an
        untied output table, its rows zero, so the untrained logits are exactly the biases. (A tied table's
        rows are the input embeddings: they stay random, and their dot products with the CLS outputs, of
        standard deviation about 1 at initialisation, add noise to every item's logit until trained.)"""
        for bias, kind in zip(self.biases, HEADS):
            count = tf.constant(counts[kind], tf.float32)
            if count.shape != bias.shape:
                raise ValueError(f"{kind}: {count.shape[0]} counts for a head of {bias.shape[0]} items")
            bias.assign(tf.math.log(tf.maximum(count, 1.0) / float(playlists)))
        if self.output_table is not None:
            self.output_table.assign(tf.zeros_like(self.output_table))

    def set_song_artists(self, song_artists: list, counts) -> None:
        """``song_artists``: per vocabulary song, its artists' vocabulary indices (vocab.json's rows), the first
        the song's artist in the shared output rows (none: the "no artist" row); ``counts`` [n_songs]: its
        training playlists, which set its share ``k / (k + count)`` of that row. Nothing without a prior."""
        if self.song_artist is None:
            return
        if len(song_artists) != self.sizes[0] or len(counts) != self.sizes[0]:
            raise ValueError(f"{len(song_artists)} songs' artists and {len(counts)} counts for a model of "
                             f"{self.sizes[0]} songs")
        self.song_artist.assign([row[0] if row else self.sizes[2] for row in song_artists])
        self.artist_share.assign(self.artist_prior / (self.artist_prior + tf.constant(counts, tf.float32)))

    @classmethod
    def from_config(cls, model_config: DAEConfig, sizes: dict, compute_dtype=tf.float32) -> "DAE":
        """The DAE of a config's ``model`` section (configs/dae.yaml, or an export's ``model_config``, read
        with ``parse_section(DAEConfig, ...)``) over a work directory's vocabulary ``sizes`` (its manifest's:
        songs, tags, artists, title_pieces)."""
        return cls(sizes["songs"], sizes["tags"], sizes["artists"], **as_dict(model_config),
                   n_pieces=sizes.get("title_pieces", 0), compute_dtype=compute_dtype)

    def tokens(self, songs, tags, artists, title=None):
        """[batch, 3 + lengths] token ids: the CLS tokens, then the items (and the title's pieces, when the
        model reads titles) shifted into the shared table."""
        batch = tf.shape(songs)[0]
        parts = [tf.tile(self.cls_ids[None, :], [batch, 1])]
        segments = [(songs, self.offsets[0]), (tags, self.offsets[1]), (artists, self.offsets[2])]
        if self.piece_offset is not None and title is not None:
            segments.append((title, self.piece_offset))
        for ids, offset in segments:
            parts.append(tf.where(ids == PAD, self.pad_id, ids + offset))
        return tf.concat(parts, axis=1)

    def encode(self, songs, tags, artists, title=None, training: bool = False):
        """The CLS outputs [batch, 3, hidden] float32 (songs, tags, artists) for int32 id batches
        songs/tags/artists/title [batch, length_*] padded with -1."""
        ids = self.tokens(songs, tags, artists, title)
        mask = ids != self.pad_id
        x = tf.gather(self.embedding, ids) * math.sqrt(self.hidden) * tf.cast(mask, tf.float32)[..., None]
        h = self.encoder(tf.cast(x, self.compute_dtype), mask, training, outputs=3)  # only the CLS outputs are read
        return tf.cast(h, tf.float32)  # the output heads (and the loss) stay in float32

    def _table(self):
        return self.embedding if self.output_table is None else self.output_table

    def output_rows(self, head: int, ids=None):
        """[C, hidden] output rows of head ``head``'s items ``ids`` [C] int32 (None: all of them), the songs'
        with their artists' shared rows added when the model has them."""
        offset, size = self.offsets[head], self.sizes[head]
        rows = self._table()[offset:offset + size] if ids is None else tf.gather(self._table(), ids + offset)
        if head == 0 and self.artist_table is not None:
            artists = self.song_artist if ids is None else tf.gather(self.song_artist, ids)
            share = self.artist_share if ids is None else tf.gather(self.artist_share, ids)
            rows += share[:, None] * tf.gather(self.artist_table, artists)
        return rows

    def __call__(self, songs, tags, artists, title=None, training: bool = False, heads: int = 3):
        """Logits (songs [batch, n_songs], tags [batch, n_tags], artists [batch, n_artists]) for int32 id
        batches songs/tags/artists/title [batch, length_*] padded with -1 (``title``: piece ids, read only
        by a model built with ``title=True``); with ``heads=2`` only songs and tags (inference does not need
        the artists head)."""
        h = self.encode(songs, tags, artists, title, training)
        out = []
        for position, bias in enumerate(self.biases[:heads]):
            out.append(tf.matmul(h[:, position], self.output_rows(position), transpose_b=True) + bias)
        return tuple(out)

    def score(self, h, head: int, ids):
        """Logits [batch, C] of head ``head`` (0 songs, 1 tags, 2 artists) for its items ``ids`` [C] int32 only,
        from CLS outputs ``h`` [batch, 3, hidden]; the table's and bias's gradients touch only those rows."""
        return tf.matmul(h[:, head], self.output_rows(head, ids), transpose_b=True) + tf.gather(self.biases[head], ids)

    def chunked_scores(self, h, head: int, chunk: int) -> ChunkedScores:
        """Head ``head``'s logits for CLS outputs ``h`` [batch, 3, hidden] as ChunkedScores: items
        [start, stop) scored at a time ([batch, stop - start], ``chunk`` items), for a top-k over a table too
        large to score whole (models/ranking.py)."""
        size = self.sizes[head]
        return ChunkedScores(lambda start, stop: self.score(h, head, tf.range(start, stop)).numpy(), size,
                             max(1, min(chunk, size)))


HEADS = ("songs", "tags", "artists")
TARGETS = ("all", "hidden")


def dae_loss(model: DAE, batch: dict, tag_weight: float, artist_weight: float, rank_weight: float, training: bool,
             item_loss: str = "bce", targets: str = "all", rank_k: int = 100, sampler: SampledOutput | None = None):
    """(total loss, {part: value}) for a pipeline batch: songs + w_t tags + w_a artists (+ ranking), each part
    the mean sigmoid BCE (``item_loss="bce"``, the reference) or the multinomial log-likelihood ("softmax").

    ``targets="all"`` (the reference) reconstructs each playlist's whole set, the kept input items included;
    ``"hidden"`` scores only what the corruption left out, the given items' logits masked out of every head
    (``hide_given``), as a question's answer never holds what it gives. With a ``sampler`` (softmax only),
    each head it samples is scored on the step's candidates alone (models/sampled.py), not on every item."""
    given = {"songs": batch["songs_in"], "tags": batch["tags_in"], "artists": batch["artists_in"]}
    if sampler is not None:
        return _sampled_loss(model, batch, given, (1.0, tag_weight, artist_weight), rank_weight, training,
                             targets, rank_k, sampler)
    loss = ITEM_LOSSES[item_loss]
    logits = dict(zip(HEADS, model(given["songs"], given["tags"], given["artists"], batch.get("title_in"),
                                   training=training)))
    wanted = {}
    for (kind, size) in zip(HEADS, model.sizes):
        wanted[kind] = multi_hot(batch[kind], size)
        if targets == "hidden":
            logits[kind] = hide_given(logits[kind], given[kind])
            wanted[kind] = tf.maximum(wanted[kind] - multi_hot(given[kind], size), 0.0)
    parts = {kind: loss(logits[kind], wanted[kind]) for kind in logits}
    total = parts["songs"] + tag_weight * parts["tags"] + artist_weight * parts["artists"]
    if rank_weight:
        parts["ranking"] = ranking_bce(logits["songs"], wanted["songs"], rank_k)
        total += rank_weight * parts["ranking"]
    return total, parts


def _sampled_loss(model: DAE, batch: dict, given: dict, weights: tuple, rank_weight: float, training: bool,
                  targets: str, rank_k: int, sampler: SampledOutput):
    """:func:`dae_loss` with the softmax item loss, each head the sampler samples scored on its candidates
    ``[batch, C]``, the others on every item."""
    h = model.encode(given["songs"], given["tags"], given["artists"], batch.get("title_in"), training=training)
    parts, total = {}, 0.0
    for head, (kind, size, weight) in enumerate(zip(HEADS, model.sizes, weights)):
        if sampler.sampled(kind):
            chosen = candidates(batch[kind], given[kind], sampler.draw(kind), hidden=targets == "hidden")
            logits = model.score(h, head, chosen.ids) - sampler.correction(kind, chosen.ids)
            wanted, given_hot = chosen.wanted, chosen.given
        else:
            logits = model.score(h, head, tf.range(size))
            wanted, given_hot = multi_hot(batch[kind], size), tf.minimum(multi_hot(given[kind], size), 1.0)
            if targets == "hidden":
                wanted = tf.maximum(wanted - given_hot, 0.0)
        if targets == "hidden":
            logits -= 1e9 * given_hot
        parts[kind] = softmax_xent(logits, wanted)
        total += weight * parts[kind]
        if kind == "songs" and rank_weight:
            parts["ranking"] = ranking_bce(logits, wanted, rank_k)
            total += rank_weight * parts["ranking"]
    return total, parts
