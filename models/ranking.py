"""Ranking helpers shared by the trainers' validation and the ensemble: the top k of each row of scores,
and the same with a question's given items and blocked (e.g. not yet released) items left out, over scores
that may be produced a column range at a time (:class:`ChunkedScores`: memory [rows, chunk], not
[rows, n_items])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ChunkedScores:
    """Scores [rows, n_items] never held whole: ``score(start, stop)`` gives columns [start, stop) as a
    [rows, stop - start] array (or tensor), asked for ``chunk`` columns at a time."""
    score: Callable[[int, int], np.ndarray]
    n_items: int
    chunk: int

    @classmethod
    def whole(cls, scores) -> "ChunkedScores":
        """A matrix [rows, n_items] (NumPy or TensorFlow) already in memory, as one chunk."""
        return cls(lambda start, stop: scores[:, start:stop], int(scores.shape[1]), max(1, int(scores.shape[1])))


def top_unseen(scores, seen: np.ndarray, blocked: Callable[[int, int], np.ndarray] | None, k: int) -> np.ndarray:
    """Per row, the k best column indices of ``scores`` (a matrix [rows, n_items] or :class:`ChunkedScores`),
    best first, leaving out ``seen`` [rows, s] (column indices, padded -1) and the columns where
    ``blocked(start, stop)`` ([rows, stop - start] bool) is true. Returns [rows, min(k, n_items)] int64, -1
    where a row has fewer than k columns left. Memory: [rows, k + chunk]."""
    if not isinstance(scores, ChunkedScores):
        scores = ChunkedScores.whole(scores)
    rows = seen.shape[0]
    best_values = np.full((rows, 0), -np.inf, dtype=np.float32)
    best_items = np.zeros((rows, 0), dtype=np.int64)
    for start in range(0, scores.n_items, scores.chunk):
        stop = min(scores.n_items, start + scores.chunk)
        part = np.array(scores.score(start, stop), dtype=np.float32)  # a copy: masked below
        row, col = np.nonzero((seen >= start) & (seen < stop))
        part[row, seen[row, col] - start] = -np.inf
        if blocked is not None:
            part[np.asarray(blocked(start, stop), dtype=bool)] = -np.inf
        values = np.concatenate([best_values, part], axis=1)
        items = np.concatenate([best_items, np.broadcast_to(np.arange(start, stop), part.shape)], axis=1)
        top = top_rows(values, k)
        best_values, best_items = np.take_along_axis(values, top, axis=1), np.take_along_axis(items, top, axis=1)
    return np.where(best_values > -np.inf, best_items, -1)


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the k largest scores (all of them when a row has fewer), best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
