"""models/ranking.py's top-k over scores produced a chunk of the item table at a time: the same answer as
sorting each whole row, never more than a chunk of columns asked for at once, and the DAE's chunked song
scores equal to its full logits."""

from __future__ import annotations

import numpy as np
import pytest

from models.ranking import ChunkedScores, top_unseen


def _sorted_reference(scores: np.ndarray, seen: np.ndarray, blocked: np.ndarray, k: int) -> list[list[int]]:
    """Each row sorted whole, seen and blocked columns dropped, padded with -1 to min(k, n)."""
    out = []
    for row, given, gone in zip(scores, seen, blocked):
        allowed = row.copy()
        allowed[given[given >= 0]] = -np.inf
        allowed[gone] = -np.inf
        order = [int(i) for i in np.argsort(-allowed, kind="stable") if np.isfinite(allowed[i])][:k]
        out.append(order + [-1] * (min(k, len(row)) - len(order)))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_chunked_top_k_equals_sorting_each_whole_row(seed):
    rng = np.random.default_rng(seed)
    rows, n, k = int(rng.integers(1, 6)), int(rng.integers(1, 300)), int(rng.integers(1, 120))
    scores = rng.normal(size=(rows, n)).astype(np.float32)
    seen = np.where(rng.random((rows, 7)) < 0.7, rng.integers(0, n, (rows, 7)), -1)
    blocked = rng.random((rows, n)) < 0.3
    expected = _sorted_reference(scores, seen, blocked, k)
    widths = []

    def score(start, stop):
        widths.append(stop - start)
        return scores[:, start:stop]

    for chunk in (1, 7, 64, n):
        widths.clear()
        got = top_unseen(ChunkedScores(score, n, chunk), seen, lambda start, stop: blocked[:, start:stop], k)
        assert got.tolist() == expected, chunk
        assert max(widths) <= chunk and sum(widths) == n  # every column once, never more than a chunk at a time
    assert top_unseen(scores, seen, lambda start, stop: blocked[:, start:stop], k).tolist() == expected


def test_the_dae_scores_its_songs_in_chunks_as_its_full_logits_do():
    import tensorflow as tf

    from models.dae import DAE

    tf.random.set_seed(0)
    model = DAE(50, 6, 9, hidden=16, blocks=1, heads=2, ffn=32, activation="gelu", dropout=0.0, tied_output=False,
                title=False)
    songs = tf.constant([[1, 4, -1], [7, -1, -1]], tf.int32)
    tags = tf.constant([[0], [-1]], tf.int32)
    artists = tf.constant([[2], [3]], tf.int32)
    full_songs, _ = model(songs, tags, artists, heads=2)
    chunked = model.chunked_scores(model.encode(songs, tags, artists), 0, 8)
    assert chunked.n_items == 50 and chunked.chunk == 8
    pieces = np.concatenate([chunked.score(s, min(50, s + 8)) for s in range(0, 50, 8)], axis=1)
    np.testing.assert_allclose(pieces, full_songs.numpy(), rtol=1e-5, atol=1e-5)
    assert top_unseen(chunked, songs.numpy(), None, 10).tolist() == top_unseen(full_songs.numpy(), songs.numpy(),
                                                                              None, 10).tolist()
