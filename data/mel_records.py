"""Mel-spectrogram shards of a work directory (``data.preprocess --mel DIR``), the CNN's input.

Every song with a usable spectrogram (data/mel.py) becomes one ``tf.train.Example``:

==========  ==========================================================================================
feature     content
==========  ==========================================================================================
id          song id (song_meta.json's)
frames      frames of the song's own array kept, <= the shards' fixed length F
mel         float16 [48, F] bytes, row-major: the centre F frames, or a shorter song tiled to F
tags        its label tags: the ``label_tags`` tag-vocabulary indices most frequent among the training
            playlists that hold it (ties: the more frequent tag overall), empty if none
genres      its major genres, indices into the manifest's ``mel.genres`` (codes sorted)
==========  ==========================================================================================

Songs are split three ways, by song id and never by rank (the shards are byte-identical for any number
of ranks):

* ``mel_train``: songs of some training playlist, what the CNN trains on;
* ``mel_holdout``: a fixed ``holdout_share`` of the training songs with at least one label tag, chosen
  by a hash of the song id: never trained on; the CNN's validation and bench.cnn score its tag
  predictions there;
* ``mel_rest``: songs of no training playlist (cold-start songs): embedded at export, never trained on.

Song i of a kind (ascending ids) goes to shard ``i mod N``; rank r writes the shards s with
``s mod ranks == r``. A bad file is reported with its path by the rank that reads it and skipped; the
counts reach the manifest (``mel.report``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from data.mel import BadMel, MelReport, MelSource
from data.workdir import sha256_file

KINDS = ("mel_train", "mel_holdout", "mel_rest")


def check_config(mel: dict) -> None:
    """The ``mel`` section of configs/data.yaml; ValueError when a key is missing or out of range."""
    for key in ("frames", "label_tags", "min_shards", "records_per_shard"):
        if int(mel[key]) <= 0:
            raise ValueError(f"mel.{key} must be positive")
    if not 0.0 < float(mel["holdout_share"]) < 1.0:
        raise ValueError("mel.holdout_share must lie in (0, 1)")


def song_labels(train: list[dict], song_meta: list[dict], tag_index: dict, label_tags: int) -> tuple[dict, dict, list]:
    """(tags, genres, codes): ``tags[song]`` the ``label_tags`` most frequent in-vocabulary tags of the
    training playlists holding the song (songs of some training playlist only), ``genres[song]`` its major
    genres as indices into ``codes`` (the sorted major codes of song_meta.json), for every song."""
    counts: dict[int, Counter] = {}
    for playlist in train:
        tags = [tag_index[t] for t in playlist["tags"] if t in tag_index]
        for song in playlist["songs"]:
            counts.setdefault(song, Counter()).update(tags)
    # a smaller tag index is a more frequent tag (the vocabulary is sorted by count): it wins ties
    tags = {s: [t for t, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:label_tags]] for s, c in counts.items()}
    codes = sorted({g for song in song_meta for g in song["song_gn_gnr_basket"]})
    position = {g: i for i, g in enumerate(codes)}
    genres = {song["id"]: sorted({position[g] for g in song["song_gn_gnr_basket"]}) for song in song_meta}
    return tags, genres, codes


def held_out(song_id: int, share: float) -> bool:
    """Whether a song is in the hold-out part: a fixed hash of its id, not the data's order."""
    return (song_id * 2654435761) % 2**32 < share * 2**32


def plan(source: MelSource, tags: dict, share: float) -> dict:
    """{kind: ascending song ids} for the songs ``source`` has a file for."""
    songs = sorted(source.locations)
    holdout = [s for s in songs if s in tags and tags[s] and held_out(s, share)]
    chosen = set(holdout)
    return {"mel_train": [s for s in songs if s in tags and s not in chosen], "mel_holdout": holdout,
            "mel_rest": [s for s in songs if s not in tags]}


def fixed_length(array: np.ndarray, frames: int) -> tuple[np.ndarray, int]:
    """[48, T] -> ([48, frames] float16, frames of its own kept): the centre ``frames`` of a longer array, a
    shorter one repeated along time until it is ``frames`` long."""
    length = array.shape[1]
    if length >= frames:
        start = (length - frames) // 2
        return array[:, start:start + frames].astype(np.float16), frames
    return np.tile(array, (1, -(-frames // length)))[:, :frames].astype(np.float16), length


def encode(song_id: int, mel: np.ndarray, frames: int, tags: list[int], genres: list[int]) -> bytes:
    import tensorflow as tf

    ints = lambda values: tf.train.Feature(int64_list=tf.train.Int64List(value=values))  # noqa: E731
    feature = {"id": ints([song_id]), "frames": ints([frames]), "tags": ints(tags), "genres": ints(genres),
               "mel": tf.train.Feature(bytes_list=tf.train.BytesList(value=[mel.astype("<f2").tobytes()]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode(serialized, frames: int) -> dict:
    """One serialized record -> {id, frames, tags [n], genres [m] (int32), mel [48, frames] float32}."""
    import tensorflow as tf

    spec = {"id": tf.io.FixedLenFeature([], tf.int64), "frames": tf.io.FixedLenFeature([], tf.int64),
            "mel": tf.io.FixedLenFeature([], tf.string), "tags": tf.io.RaggedFeature(tf.int64),
            "genres": tf.io.RaggedFeature(tf.int64)}
    record = tf.io.parse_single_example(serialized, spec)
    mel = tf.reshape(tf.io.decode_raw(record["mel"], tf.float16, little_endian=True), [48, frames])
    return {"id": record["id"], "frames": tf.cast(record["frames"], tf.int32), "mel": tf.cast(mel, tf.float32),
            "tags": tf.cast(record["tags"], tf.int32), "genres": tf.cast(record["genres"], tf.int32)}


def write_shards(kind: str, songs: list[int], total: int, rank: int, size: int, locations: dict, labels: dict,
                 frames: int, workdir) -> tuple[list[dict], MelReport]:
    """Write this rank's shards of ``kind``; returns ([{file, records, kept, sha256}], what was read).
    ``locations``: song -> (path, member); ``labels``: {"tags": {song: [...]}, "genres": {song: [...]}}."""
    import tensorflow as tf
    from tqdm import tqdm

    source = MelSource.from_locations(locations)  # what rank 0 found, not scanned again
    report, archives, written = MelReport(), {}, []
    mine = [s for s in range(total) if s % size == rank]
    try:
        for s in tqdm(mine, desc=f"{kind} shards (rank {rank})", disable=rank != 0, unit="shard"):
            name = f"shards/{kind}-{s:05d}-of-{total:05d}.tfrecord"
            count = 0
            with tf.io.TFRecordWriter(str(workdir / name)) as writer:
                for song in songs[s::total]:
                    try:
                        array = source.read(song, archives)
                    except BadMel as e:
                        report.bad_file(source.locations[song], str(e))
                        continue
                    mel, kept = fixed_length(array, frames)
                    writer.write(encode(song, mel, kept, labels["tags"].get(song, []), labels["genres"][song]))
                    report.ok += 1
                    count += 1
            written.append({"file": name, "records": count, "kept": {"cnn": count},
                            "sha256": sha256_file(workdir / name)})
    finally:
        for archive in archives.values():
            archive.close()
    return written, report
