"""The task itself, which every layer may import (data -> models -> {hvd_train, inference} -> evaluate -> bench):
what an answer holds (100 songs, 10 tags), the five question types and a question's type, one list's nDCG as
the official Kakao Arena evaluator computes it (data/ndcg.py scores whole result files with it), and the
quality protocol's two parts of the validation questions.

**The quality protocol.** Every choice made by looking at scores (best-epoch selection and early stopping in
the trainers, every peer's grid, the ensemble's blend weights) uses the *tuning* part of the validation
questions only; every quality figure the project reports is measured on the *report* part only, which nothing
was tuned on. The parts are fixed by playlist id and stratified by question type: within each type
(:data:`QUESTION_TYPES`), the questions are ordered by a hash of their id (the 64-bit SplitMix64 finaliser, so
neither the id order nor the generator's numbering decides) and the first half, rounded up, is the tuning part.
The assignment depends only on the ids and the types of the questions in the set, so the same question file
always gives the same parts, on any machine, in any process (``python -m evaluate.protocol QUESTIONS_JSON``
prints their sizes).
"""

from __future__ import annotations

import math
from collections import defaultdict

SONGS_PER_PLAYLIST = 100
TAGS_PER_PLAYLIST = 10

# The official table: _idcgs[n] = sum_{i<n} 1/ln(i+2), n = 0..100 (natural log; the base cancels).
IDCG = [sum(1.0 / math.log(i + 2) for i in range(n)) for n in range(SONGS_PER_PLAYLIST + 1)]

QUESTION_TYPES = ("songs-only", "songs+tags", "tags-only", "title-only", "empty")


class InvalidResults(ValueError):
    """A results file the official evaluator would reject (or crash on)."""


def ndcg(gt: list, rec: list) -> float:
    """One playlist's nDCG of ``rec`` against the relevant items ``gt`` (official formula).

    ``gt`` must hold 1 to 100 items (the official ideal-DCG table); otherwise InvalidResults, where the
    official script divides by zero or indexes past its table.
    """
    if not 1 <= len(gt) <= SONGS_PER_PLAYLIST:
        raise InvalidResults(f"nDCG needs 1 to {SONGS_PER_PLAYLIST} relevant items, got {len(gt)}")
    relevant = set(gt)
    dcg = sum(1.0 / math.log(i + 2) for i, item in enumerate(rec) if item in relevant)
    return dcg / IDCG[len(gt)]


def question_type(question: dict) -> str:
    """Which of QUESTION_TYPES a question is, from what it gives (songs, tags, a non-blank title)."""
    has_songs, has_tags = bool(question.get("songs")), bool(question.get("tags"))
    if has_songs and has_tags:
        return "songs+tags"
    if has_songs:
        return "songs-only"
    if has_tags:
        return "tags-only"
    if str(question.get("plylst_title", "")).strip():
        return "title-only"
    return "empty"



PARTS = ("tune", "report")
_MASK = (1 << 64) - 1


def _mix(playlist_id: int) -> int:
    """SplitMix64's finaliser: a fixed, well-spread 64-bit hash of an integer id."""
    z = (int(playlist_id) + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def parts(questions: list[dict]) -> dict[str, set[int]]:
    """``{"tune": ids, "report": ids}``: each question type split in half by the hash of the ids (the tuning
    half gets the odd one out)."""
    by_type: dict[str, list[int]] = defaultdict(list)
    for q in questions:
        by_type[question_type(q)].append(int(q["id"]))
    out = {"tune": set(), "report": set()}
    for ids in by_type.values():
        ordered = sorted(ids, key=lambda pid: (_mix(pid), pid))
        half = (len(ordered) + 1) // 2
        out["tune"].update(ordered[:half])
        out["report"].update(ordered[half:])
    return out


def select(playlists: list[dict], ids: set[int]) -> list[dict]:
    """The playlists (questions, answers or results) whose id is in ``ids``, in their order."""
    return [p for p in playlists if p.get("id") in ids]
