"""The TFRecord format shared by preprocessing (writer) and the input pipeline (reader).

One ``tf.train.Example`` per playlist. Item ids are indices into the work directory's vocabularies
(``vocab.json``): songs, tags and artists each count from 0; out-of-vocabulary items are dropped.

==========  =====================================================================
feature     content
==========  =====================================================================
id          playlist id (int64)
updt_date   update date as int YYYYMMDD
songs       song-vocabulary indices, in playlist order
tags        tag-vocabulary indices
artists     artist-vocabulary indices of the playlist's songs, each once
title       sentencepiece piece ids of the normalised title (at most max_title_pieces)
==========  =====================================================================
"""

from __future__ import annotations

LIST_FEATURES = ("songs", "tags", "artists", "title")
SCALAR_FEATURES = ("id", "updt_date")


def encode(record: dict) -> bytes:
    """Serialize one record ({feature: int or list of ints}) as a tf.train.Example."""
    import tensorflow as tf

    feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=[record[name]])) for name in SCALAR_FEATURES}
    feature.update({name: tf.train.Feature(int64_list=tf.train.Int64List(value=record[name])) for name in LIST_FEATURES})
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec() -> dict:
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in SCALAR_FEATURES}
    spec.update({name: tf.io.RaggedFeature(tf.int64) for name in LIST_FEATURES})
    return spec


def decode(serialized) -> dict:
    """Parse one serialized Example (a scalar string tensor) into tensors; list features are 1-D."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, feature_spec())
