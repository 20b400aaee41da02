"""tf.data input pipelines over a work directory's TFRecord shards, split per Horovod rank.

``training_dataset(workdir, mode, rank, size, epoch, ...)``:

1. the shard files of the manifest, in order, then ``shard(size, rank)``: each rank reads whole files,
   disjoint from the other ranks' and together all of them (an error when there are fewer files than
   ranks);
2. the rank's files in an order shuffled per epoch, interleaved (``interleave_cycle`` files at a time,
   ``interleave_block`` records from each in turn), then records shuffled in a buffer;
3. on the fly, per playlist, with stateless random numbers seeded by (seed, epoch, playlist id):

   * ``dae``: the denoising corruption. Keep ``randint(m, min(n_songs, max_songs))`` of the songs
     (m = 1 when the playlist has no tags) and ``randint(m', min(n_tags, max_tags))`` of the tags
     (m' = 1 when no song was kept); the input artists are those of the kept songs; the targets are
     the full sets. The title's pieces are kept with probability ``title_keep`` (else ``title_in`` is
     empty), and a kept title is the whole input with probability ``title_only`` (no song, no tag: a
     title-only question). Playlists with no in-vocabulary song or tag are skipped.
   * ``title_mlm``: 15% of the title pieces chosen (at least one); of those 80% become ``[mask]``,
     10% a random piece, 10% stay; the labels hold the original piece where chosen, -1 elsewhere.
     Playlists with an empty title are skipped.
   * ``title_finetune``: title pieces in, songs and tags as targets; empty titles skipped.
   * ``word2vec``: (inputs, target, negatives) token examples drawn from the playlist's songs, tags and
     title pieces (:class:`Word2VecSampler`); the DAE's playlists (a song or a tag) are read.

4. padded per batch with -1, prefetched.

The same (seed, rank, size, epoch) gives the same batches. ``eval_dataset`` reads the validation
question shards in order, unshuffled and unaltered.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from data.mel_records import decode as decode_mel
from data.records import decode
from data.vocab import item_counts

PAD = -1
MODES = ("dae", "title_mlm", "title_finetune", "word2vec")


def shard_files(workdir: str | Path, kind: str, rank: int = 0, size: int = 1) -> list[str]:
    """This rank's shard files of ``kind`` ('train', 'val' or a mel kind): every size-th file from the rank-th."""
    workdir = Path(workdir)
    manifest = json.loads((workdir / "manifest.json").read_text(encoding="utf-8"))
    files = [str(workdir / s["file"]) for s in manifest["shards"][kind]]
    if len(files) < size:
        raise ValueError(f"{workdir}: {len(files)} {kind} shards cannot feed {size} ranks (each rank reads whole "
                         f"files); rerun data.preprocess with shards.min_shards >= {size}")
    return files[rank::size]


def _element_seed(seed: int, epoch: int, playlist_id):
    return tf.stack([tf.constant(seed * 1_000_003 + epoch, tf.int64), playlist_id])


def _subset(items, k, seed):
    """``k`` of ``items`` in a random order, with a stateless seed."""
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(items), seed))
    return tf.gather(items, order[:k])


def _randint(low, high, seed):
    """A uniform integer in [low, high] (both inclusive; low <= high)."""
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high + 1, dtype=tf.int32)


def dae_corruption(record: dict, seed, song_artists: tf.RaggedTensor, max_songs: int = 100, max_tags: int = 5,
                   title_keep: float = 0.0, title_only: float = 0.0) -> dict:
    songs, tags = tf.cast(record["songs"], tf.int32), tf.cast(record["tags"], tf.int32)
    n_songs, n_tags = tf.size(songs), tf.size(tags)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    # the title's draws come from a stream of their own: with title_keep 0 the items' draws are unchanged
    title_seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 1), 2)
    title = tf.cast(record["title"], tf.int32)
    keep_title = (tf.size(title) > 0) & (tf.random.stateless_uniform([], title_seeds[0]) < title_keep)
    only_title = keep_title & (tf.random.stateless_uniform([], title_seeds[1]) < title_only)
    most_songs = tf.where(only_title, 0, tf.minimum(n_songs, max_songs))
    k_songs = _randint(tf.minimum(tf.cast(n_tags == 0, tf.int32), most_songs), most_songs, seeds[0])
    kept_songs = _subset(songs, k_songs, seeds[1])
    most_tags = tf.where(only_title, 0, tf.minimum(n_tags, max_tags))
    k_tags = _randint(tf.minimum(tf.cast(k_songs == 0, tf.int32), most_tags), most_tags, seeds[2])
    kept_tags = _subset(tags, k_tags, seeds[3])
    kept_artists, _ = tf.unique(tf.gather(song_artists, kept_songs).flat_values)
    return {
        "id": record["id"], "updt_date": record["updt_date"],
        "songs_in": kept_songs, "tags_in": kept_tags, "artists_in": kept_artists,
        "title_in": title[:tf.where(keep_title, tf.size(title), 0)],
        "songs": songs, "tags": tags, "artists": tf.cast(record["artists"], tf.int32),
    }


def title_masking(record: dict, seed, mask_id: int, first_piece_id: int, n_pieces: int, rate: float = 0.15) -> dict:
    title = tf.cast(record["title"], tf.int32)
    n = tf.size(title)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    u = tf.random.stateless_uniform([n], seeds[0])
    chosen = (u < rate) | (tf.range(n) == tf.cast(tf.argmin(u), tf.int32))  # at least one piece
    r = tf.random.stateless_uniform([n], seeds[1])
    random_piece = tf.random.stateless_uniform([n], seeds[2], minval=first_piece_id, maxval=n_pieces, dtype=tf.int32)
    masked = tf.where(chosen & (r < 0.8), mask_id, tf.where(chosen & (r < 0.9), random_piece, title))
    return {"id": record["id"], "title_in": masked, "title_labels": tf.where(chosen, title, PAD),
            "title_positions": tf.cast(tf.where(chosen)[:, 0], tf.int32)}  # where to predict: the model computes
    # the tied 6,000-piece softmax only there (as BERT's max_predictions_per_seq), not at every position


def _song_artists(workdir: Path) -> tf.RaggedTensor:
    """Row i: the artist indices of vocabulary song i (built from flat arrays: fast at any vocabulary size)."""
    rows = json.loads((workdir / "vocab.json").read_text(encoding="utf-8"))["song_artists"]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    values = np.fromiter((a for r in rows for a in r), dtype=np.int32, count=int(lengths.sum()))
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def training_dataset(workdir: str | Path, mode: str, rank: int, size: int, epoch: int, batch_size: int,
                     seed: int = 0, shuffle_buffer: int = 8192, max_songs: int = 100, max_tags: int = 5,
                     title_keep: float = 0.0, title_only: float = 0.0, mask_rate: float = 0.15,
                     drop_remainder: bool = False, interleave_cycle: int = 4, interleave_block: int = 16,
                     word2vec=None) -> tf.data.Dataset:
    """One epoch of this rank's training batches (see the module docstring). ``word2vec``: mode word2vec's
    sampling (models/word2vec.py ``Word2VecConfig``: pairs, inputs per example, negatives, subsample)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    workdir = Path(workdir)
    ds = _shuffled_records(shard_files(workdir, "train", rank, size), seed, epoch, rank, shuffle_buffer,
                           interleave_cycle, interleave_block)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if mode in ("dae", "word2vec"):  # the playlists the manifest counts as kept.dae
        ds = ds.filter(lambda r: tf.size(r["songs"]) + tf.size(r["tags"]) > 0)
    else:
        ds = ds.filter(lambda r: tf.size(r["title"]) > 0)
    ds = ds.map(_per_playlist(workdir, mode, seed, epoch, max_songs, max_tags, title_keep, title_only, mask_rate,
                              word2vec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.padded_batch(batch_size, padding_values=_pad_values(ds.element_spec), drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shuffled_records(files: list[str], seed: int, epoch: int, rank: int, shuffle_buffer: int, interleave_cycle: int,
                      interleave_block: int) -> tf.data.Dataset:
    """Serialized records of this rank's ``files`` for one epoch: the files in an order shuffled per (seed,
    epoch, rank), interleaved, then the records shuffled in a buffer (steps 1-2 of the module docstring)."""
    order_seed = seed * 1_000_003 + epoch * 97 + rank
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=order_seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(interleave_cycle, len(files)), block_length=interleave_block,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.shuffle(shuffle_buffer, seed=order_seed)


def _per_playlist(workdir: Path, mode: str, seed: int, epoch: int, max_songs: int, max_tags: int, title_keep: float,
                  title_only: float, mask_rate: float, word2vec):
    """The function ``mode`` maps over each decoded training record (seeded by seed, epoch, playlist id)."""
    if mode == "dae":
        song_artists = _song_artists(workdir)
        return lambda r: dae_corruption(r, _element_seed(seed, epoch, r["id"]), song_artists, max_songs, max_tags,
                                        title_keep, title_only)
    if mode == "title_mlm":
        from data.title import TitleTokenizer

        tok = TitleTokenizer(workdir / "title.model")
        return lambda r: title_masking(r, _element_seed(seed, epoch, r["id"]), tok.mask_id, tok.first_piece_id,
                                       tok.size, mask_rate)
    if mode == "word2vec":
        sampler = Word2VecSampler(workdir, word2vec)
        return lambda r: sampler(r, _element_seed(seed, epoch, r["id"]))
    return lambda r: {"id": r["id"], "title": tf.cast(r["title"], tf.int32), "songs": tf.cast(r["songs"], tf.int32),
                      "tags": tf.cast(r["tags"], tf.int32)}


class Word2VecSampler:
    """Mode ``word2vec``: per playlist, ``pairs`` examples of (inputs, target, negatives) token ids.

    Tokens: songs [0, S), tags [S, S + T), title pieces [S + T, ...). Frequency subsampling first (songs and
    tags by their training counts, word2vec's min(1, sqrt(t/f) + t/f); pieces always kept); then each
    example takes a target uniformly among the kept songs and tags, and ``inputs_per_example`` inputs
    uniformly among the kept tokens at other positions (a playlist is a set: no window), and ``negatives``
    songs or tags from the unigram^0.75 distribution. A playlist with fewer than two kept tokens or no kept
    song or tag gives examples of -1 (masked in the loss).
    """

    def __init__(self, workdir: Path, config):
        vocab = json.loads((Path(workdir) / "vocab.json").read_text(encoding="utf-8"))
        manifest = json.loads((Path(workdir) / "manifest.json").read_text(encoding="utf-8"))
        counts = item_counts(vocab)
        self.n_songs, self.n_items = len(vocab["songs"]), len(counts)
        pieces = np.ones(int(manifest["sizes"]["title_pieces"]), dtype=np.float32)
        self.keep = tf.constant(np.concatenate([keep_probabilities(counts, config.subsample), pieces]))
        self.cdf = tf.constant(negative_cdf(counts))
        self.pairs, self.inputs, self.negatives = config.pairs, config.inputs_per_example, config.negatives

    def __call__(self, record: dict, seed) -> dict:
        n_tags = self.n_items - self.n_songs
        tokens = tf.concat([tf.cast(record["songs"], tf.int32), tf.cast(record["tags"], tf.int32) + self.n_songs,
                            tf.cast(record["title"], tf.int32) + self.n_songs + n_tags], axis=0)
        seeds = tf.random.experimental.stateless_split(seed, 4)
        kept = tokens[tf.random.stateless_uniform(tf.shape(tokens), seeds[0]) < tf.gather(self.keep, tokens)]
        n = tf.size(kept)
        target_positions = tf.cast(tf.where(kept < self.n_items)[:, 0], tf.int32)
        usable = (n >= 2) & (tf.size(target_positions) > 0)
        # with nothing usable the draws below read a dummy token 0 and are replaced by -1 at the end
        kept = tf.concat([kept, [0, 0]], axis=0)
        target_positions = tf.concat([target_positions, [0]], axis=0)
        n_targets, n_safe = tf.maximum(tf.size(target_positions) - 1, 1), tf.maximum(n, 2)
        picked = tf.random.stateless_uniform([self.pairs], seeds[1], 0, n_targets, dtype=tf.int32)
        target_at = tf.gather(target_positions, picked)  # [pairs]
        others = tf.random.stateless_uniform([self.pairs, self.inputs], seeds[2], 0, n_safe - 1, dtype=tf.int32)
        input_at = (target_at[:, None] + 1 + others) % n_safe  # never the target's own position
        draws = tf.random.stateless_uniform([self.pairs * self.negatives], seeds[3])
        negatives = tf.minimum(tf.searchsorted(self.cdf, draws, side="right"), self.n_items - 1)
        blank = lambda x: tf.where(usable, x, tf.fill(tf.shape(x), PAD))  # noqa: E731
        return {"inputs": blank(tf.gather(kept, input_at)), "targets": blank(tf.gather(kept, target_at)),
                "negatives": blank(tf.reshape(tf.cast(negatives, tf.int32), [self.pairs, self.negatives]))}


def eval_dataset(workdir: str | Path, batch_size: int, rank: int = 0, size: int = 1) -> tf.data.Dataset:
    """This rank's validation questions, in shard order, unaltered, padded with -1 per batch."""
    ds = tf.data.TFRecordDataset(shard_files(workdir, "val", rank, size))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda r: {k: tf.cast(v, tf.int32) if v.shape.rank == 1 else v for k, v in r.items()})
    return ds.padded_batch(batch_size, padding_values=_pad_values(ds.element_spec)).prefetch(tf.data.AUTOTUNE)


def masked_validation_titles(workdir: str | Path, batch_size: int, rank: int, size: int, seed: int, mask_id: int,
                             first_piece_id: int, n_pieces: int, rate: float) -> tf.data.Dataset:
    """This rank's validation questions that have a title, masked as ``title_mlm`` masks training titles but
    seeded by (``seed``, playlist id) alone, so every validation masks the same pieces; batches of
    ``{"id", "title_in", "title_labels", "title_positions"}`` padded with -1."""
    titles = eval_dataset(workdir, batch_size, rank, size).unbatch().filter(
        lambda r: tf.reduce_any(r["title"] >= 0)).map(
        lambda r: {"id": r["id"], "title": tf.boolean_mask(r["title"], r["title"] >= 0)})
    masked = titles.map(lambda r: title_masking(r, tf.stack([tf.constant(seed, tf.int64), r["id"]]), mask_id,
                                                first_piece_id, n_pieces, rate))
    return masked.padded_batch(batch_size, padding_values={"id": tf.constant(PAD, tf.int64), "title_in": PAD,
                                                            "title_labels": PAD, "title_positions": PAD})


def _pad_values(spec: dict) -> dict:
    return {k: tf.constant(PAD, s.dtype) for k, s in spec.items()}


# ------------------------------------------------------------------ mel-spectrograms (the CNN)
def mel_training_dataset(workdir: str | Path, rank: int, size: int, epoch: int, batch_size: int, crop_frames: int,
                         seed: int = 0, shuffle_buffer: int = 2048, interleave_cycle: int = 4,
                         interleave_block: int = 16) -> tf.data.Dataset:
    """One epoch of this rank's ``mel_train`` songs (data/mel_records.py) in a per-epoch shuffled order,
    each a random ``crop_frames``-frame crop of its stored frames (seeded by seed, epoch and song id): batches
    of {id, mel [batch, 48, crop_frames] float32, tags, genres (padded with -1)}."""
    workdir = Path(workdir)
    frames = json.loads((workdir / "manifest.json").read_text(encoding="utf-8"))["mel"]["frames"]
    if crop_frames > frames:
        raise ValueError(f"{workdir}: crops of {crop_frames} frames from spectrograms stored with {frames}")
    ds = _shuffled_records(shard_files(workdir, "mel_train", rank, size), seed, epoch, rank, shuffle_buffer,
                           interleave_cycle, interleave_block)

    def crop(serialized):
        record = decode_mel(serialized, frames)
        start = tf.random.stateless_uniform([], _element_seed(seed, epoch, record["id"]), 0, frames - crop_frames + 1,
                                            dtype=tf.int32)
        return {"id": record["id"], "mel": record["mel"][:, start:start + crop_frames], "tags": record["tags"],
                "genres": record["genres"]}

    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.padded_batch(batch_size, padding_values=_pad_values(ds.element_spec)).prefetch(tf.data.AUTOTUNE)


def mel_dataset(workdir: str | Path, kind: str, batch_size: int, rank: int = 0, size: int = 1) -> tf.data.Dataset:
    """This rank's songs of a mel shard kind (``mel_train``, ``mel_holdout``, ``mel_rest``), in shard order,
    whole (all stored frames): batches of {id, frames, mel [batch, 48, F], tags, genres (padded with -1)}."""
    frames = json.loads((Path(workdir) / "manifest.json").read_text(encoding="utf-8"))["mel"]["frames"]
    ds = tf.data.TFRecordDataset(shard_files(workdir, kind, rank, size)).map(lambda s: decode_mel(s, frames), num_parallel_calls=tf.data.AUTOTUNE,
                                            deterministic=True)
    return ds.padded_batch(batch_size, padding_values=_pad_values(ds.element_spec)).prefetch(tf.data.AUTOTUNE)


def keep_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """word2vec's subsampling: a token of frequency f = count / total is kept with min(1, sqrt(t/f) + t/f)
    (Mikolov et al. 2013, as the C code computes it); all ones when t is 0."""
    counts = np.asarray(counts, dtype=np.float64)
    if t <= 0:
        return np.ones_like(counts, dtype=np.float32)
    f = np.maximum(counts, 1.0) / max(counts.sum(), 1.0)
    return np.minimum(1.0, np.sqrt(t / f) + t / f).astype(np.float32)


def negative_cdf(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """The cumulative unigram^power distribution over the songs and tags (the negatives' sampler)."""
    weights = np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** power
    return (np.cumsum(weights) / weights.sum()).astype(np.float32)
