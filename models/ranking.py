"""Ranking helpers shared by the trainers' validation and the ensemble: the top k of each row of scores,
and the same with a question's given items and blocked (e.g. not yet released) items left out."""

from __future__ import annotations

import numpy as np


def top_unseen(scores: np.ndarray, seen: np.ndarray, blocked: np.ndarray | None, k: int) -> np.ndarray:
    """Per row, the k best indices of ``scores`` leaving out ``seen`` (padded -1) and ``blocked`` (bool)."""
    scores = scores.copy()
    rows = np.repeat(np.arange(seen.shape[0]), seen.shape[1])
    cols = seen.reshape(-1)
    keep = cols >= 0
    scores[rows[keep], cols[keep]] = -np.inf
    if blocked is not None:
        scores[blocked] = -np.inf
    return top_rows(scores, k)


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the k largest scores (all of them when a row has fewer), best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
