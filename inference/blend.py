"""Blend weights per question type, fitted on the protocol's tuning questions, stored with the run.

This is the grid blend (``python -m inference.fit_blend --method grid``); the default blend is the learned
ranker of inference/ranker.py, which reuses this module's Candidates, ``normalised``, ``save`` and ``load``.

Each member of the ensemble (inference/ensemble.py: ``dae``, ``title``, ``neighbours``, ``popular``)
proposes, per question, up to K candidate songs and tags with non-negative scores. A fitted blend scores
an item by ``sum_m w[type][m] * (s_m(item) / max_j s_m(j)) ** p``: each member's scores divided by its own
best score on that question (so members on different scales blend), raised to a power ``p`` per kind
(:data:`POWERS`: 1, or 0.5, which flattens the peaked softmax of a model against a neighbour list's
gentler slope), weighted per question type
(:data:`data.task.QUESTION_TYPES`) and separately for songs and tags. A member that does not run on
a question (the DAE without given items, the title model without a title) adds nothing.

:func:`fit` chooses the weights that maximise the mean song nDCG@100 (tag nDCG@10) of each question type's
tuning questions over a grid on the simplex (steps of 1/``steps``; with six or more members, a coarser grid refined by a
local search on the fine one), members absent from a type left out,
for each power, and keeps the power whose weights score best over all tuning questions of the kind.
A member that never helps gets weight 0, so on the tuning questions the blend is never worse than its
best member alone on any type; a type with fewer than :data:`MIN_QUESTIONS` tuning questions takes the
weights fitted on all of them.

The blend file (JSON) records the work directory's vocabulary and tokenizer hashes and the members; the
ensemble refuses one made for another work directory or other members.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.melon import write_json
from data.task import IDCG, QUESTION_TYPES
from data.workdir import identity, identity_mismatch

KINDS = ("songs", "tags")
CUTOFF = {"songs": 100, "tags": 10}
MIN_QUESTIONS = 30
POWERS = (1.0, 0.5)
EXHAUSTIVE = 1001  # grid points scored one by one before the search turns local (see _best)


class BlendError(ValueError):
    """A blend file that does not fit this work directory or these members."""


@dataclass
class Candidates:
    """One member's proposals for Q questions: ``items`` [Q, K] int (vocabulary index, -1 = none) and
    ``scores`` [Q, K] float (>= 0; 0 where items is -1), for songs and for tags."""
    song_items: np.ndarray
    song_scores: np.ndarray
    tag_items: np.ndarray
    tag_scores: np.ndarray

    def kind(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        return (self.song_items, self.song_scores) if kind == "songs" else (self.tag_items, self.tag_scores)


def normalised(scores: np.ndarray, power: float = 1.0) -> np.ndarray:
    """[Q, K] scores divided by each row's largest (rows without a positive score stay 0), to ``power``."""
    top = scores.max(axis=1, keepdims=True) if scores.shape[1] else np.zeros((scores.shape[0], 1))
    return np.where(top > 0, scores / np.where(top > 0, top, 1.0), 0.0) ** power


def simplex(members: int, steps: int) -> np.ndarray:
    """[G, members] weight vectors with entries in multiples of 1/steps summing to 1."""
    points = [p for p in itertools.product(range(steps + 1), repeat=members) if sum(p) == steps]
    return np.array(points, dtype=np.float64) / steps


def merged(candidates: list[Candidates], kind: str) -> tuple[int, np.ndarray, np.ndarray, list[np.ndarray]]:
    """The candidates of one kind of every member, merged by (question, item): ``width`` (the key of an entry
    is question * width + item), the sorted distinct keys [N], each valid entry's index into them (member
    by member, in the members' row-major order) and each member's mask of valid entries [Q * K]."""
    width = 1 + max(int(c.kind(kind)[0].max(initial=-1)) for c in candidates)
    keys, valid = [], []
    for c in candidates:
        items = c.kind(kind)[0]
        valid.append(items.reshape(-1) >= 0)
        rows = np.repeat(np.arange(items.shape[0]), items.shape[1])
        keys.append(rows[valid[-1]] * width + items.reshape(-1)[valid[-1]])
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return width, unique, inverse, valid


def answers(unique: np.ndarray, width: int, truth: list[set], answer_sizes: np.ndarray,
            kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Whether each merged candidate (``unique``: keys of :func:`merged`) is in its question's answer [N],
    and each question's ideal DCG at the kind's cutoff [Q] (``answer_sizes``: out-of-vocabulary answers
    included)."""
    truth_keys = np.array(sorted(r * width + i for r, items in enumerate(truth) for i in items if i < width),
                          dtype=np.int64)
    return np.isin(unique, truth_keys), np.array(IDCG)[np.minimum(answer_sizes, CUTOFF[kind])]


class Pool:
    """Every question's candidates of one kind, merged: one row per (question, distinct item) with each
    member's normalised score, whether the item is in the answer, and the question's ideal DCG."""

    def __init__(self, candidates: list[Candidates], kind: str, truth: list[set], answer_sizes: np.ndarray,
                 power: float = 1.0):
        width, unique, inverse, valid = merged(candidates, kind)
        members = np.concatenate([np.full(int(v.sum()), m) for m, v in enumerate(valid)])
        values = np.concatenate([normalised(c.kind(kind)[1], power).reshape(-1)[v] for c, v in zip(candidates, valid)])
        self.scores = np.zeros((len(unique), len(candidates)))
        np.add.at(self.scores, (inverse, members), values)
        self.rows = unique // width
        self.relevant, self.idcg = answers(unique, width, truth, answer_sizes, kind)
        self.cutoff = CUTOFF[kind]
        starts = np.searchsorted(self.rows, np.arange(len(truth)))
        self.position = np.arange(len(unique)) - starts[self.rows]
        self.width = int(self.position.max(initial=-1)) + 1

    def view(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The candidates of the questions ``rows`` (sorted), dense: member scores [R, U, M] (U: the most
        distinct candidates of any question; 0 past a row's own), relevance [R, U] bool, ideal DCG [R], and
        which of the U slots hold a candidate [R, U] bool."""
        pick = np.isin(self.rows, rows)
        local = np.searchsorted(rows, self.rows[pick])  # rows is sorted: the row's place among them
        scores = np.zeros((len(rows), max(self.width, 1), self.scores.shape[1]))
        relevant = np.zeros(scores.shape[:2], dtype=bool)
        present = np.zeros(scores.shape[:2], dtype=bool)
        scores[local, self.position[pick]] = self.scores[pick]
        relevant[local, self.position[pick]] = self.relevant[pick]
        present[local, self.position[pick]] = True
        return scores, relevant, self.idcg[rows], present

    def ndcg(self, weights: np.ndarray, rows: np.ndarray) -> float:
        """Mean nDCG over ``rows`` (sorted question indices) of the blend with member ``weights`` [M]."""
        return ndcg_of(self.view(np.sort(rows)), weights, self.cutoff)


def ndcg_of(view: tuple, weights: np.ndarray, cutoff: int) -> float:
    """Mean nDCG of the blend ``weights`` [M] over a Pool.view."""
    scores, relevant, idcg, present = view
    blended = np.where(present, scores @ weights, -np.inf)
    k = min(cutoff, blended.shape[1])
    top = np.argpartition(-blended, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(blended, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    hits = np.take_along_axis(relevant, top, axis=1) & np.isfinite(np.take_along_axis(blended, top, axis=1))
    dcg = (hits / np.log(np.arange(k) + 2.0)).sum(axis=1)
    return float(np.mean(np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)))


def fit(candidates: dict[str, Candidates], truth: dict[str, list[set]], answer_sizes: dict[str, np.ndarray],
        types: list[str], steps: int = 10, powers: tuple = POWERS) -> dict:
    """Weights ``{type: {member: [song_w, tag_w]}}``, the power per kind and the tuning table (see the module
    docstring).

    ``candidates``: member -> its Candidates for the Q tuning questions; ``truth``: kind -> Q sets of
    vocabulary indices in the answers; ``answer_sizes``: kind -> [Q] answer lengths (out-of-vocabulary
    answers included: they count in the ideal DCG); ``types``: the Q question types."""
    names = list(candidates)
    types = np.array(types)
    weights = {t: {m: [0.0, 0.0] for m in names} for t in QUESTION_TYPES}
    table = {t: {} for t in QUESTION_TYPES}
    chosen_power = {}
    for k, kind in enumerate(KINDS):
        best = None
        for power in powers:
            pool = Pool([candidates[m] for m in names], kind, truth[kind], answer_sizes[kind], power)
            every = np.arange(len(types))
            fallback = _best(pool, names, every, steps)[0]
            by_type, total = {}, 0.0
            for t in QUESTION_TYPES:
                rows = np.flatnonzero(types == t)
                chosen, scores = (fallback, {}) if len(rows) < MIN_QUESTIONS else _best(pool, names, rows, steps)
                by_type[t] = (chosen, scores, pool.ndcg(chosen, rows) if len(rows) else None, len(rows))
                total += (by_type[t][2] or 0.0) * len(rows)
            if best is None or total > best[0] + 1e-12:
                best = (total, power, by_type)
        _, chosen_power[kind], by_type = best
        for t, (chosen, scores, ndcg, n) in by_type.items():
            for m, w in zip(names, chosen):
                weights[t][m][k] = float(w)
            if n:
                table[t][kind] = {"n": int(n), "blend": ndcg, **scores}
    return {"weights": weights, "power": chosen_power, "tuning": table}


def _best(pool: Pool, names: list[str], rows: np.ndarray, steps: int) -> tuple[np.ndarray, dict]:
    """The best weight vector over the grid for these rows, and each member's nDCG alone.

    Up to :data:`EXHAUSTIVE` grid points (5 active members at steps 10) every point is scored; beyond, the
    grid of steps/2 is, and the best of it is refined on the full grid by moving 1/steps of weight from one
    member to another while that helps (a local search: at most the exhaustive optimum)."""
    view = pool.view(np.sort(rows))
    active = [m for m in range(len(names)) if (view[0][:, :, m] > 0).any()]
    alone = {names[m]: ndcg_of(view, np.eye(len(names))[m], pool.cutoff) for m in active}
    if not active:
        return np.zeros(len(names)), alone

    def score(point: np.ndarray) -> float:
        w = np.zeros(len(names))
        w[active] = point
        return ndcg_of(view, w, pool.cutoff)

    exhaustive = math.comb(steps + len(active) - 1, len(active) - 1) <= EXHAUSTIVE
    points = simplex(len(active), steps if exhaustive else max(1, steps // 2))
    point, best_score = None, -1.0
    for candidate in points:
        value = score(candidate)
        if value > best_score + 1e-12:
            point, best_score = candidate, value
    while not exhaustive:
        moves = [point + (np.eye(len(active))[j] - np.eye(len(active))[i]) / steps
                 for i in range(len(active)) for j in range(len(active)) if i != j and point[i] >= 1 / steps - 1e-9]
        scored = [(score(m), k) for k, m in enumerate(moves)]
        top, k = max(scored, key=lambda x: (x[0], -x[1]))
        if top <= best_score + 1e-12:
            break
        point, best_score = np.clip(moves[k], 0.0, 1.0), top
    w = np.zeros(len(names))
    w[active] = point
    return w, {"alone": alone}


def save(path: Path, fitted: dict, manifest: dict, members: list[str], extra: dict) -> None:
    write_json({"workdir": identity(manifest), "members": members, **fitted, **extra}, Path(path))


def load(path: Path, manifest: dict, members: list[str], weak: list[str] = ()) -> dict:
    """The blend file's ``method`` ("grid", or "ranker": inference/ranker.py's learned blend, its weights
    under ``ranker``), a grid blend's weights ``{type: {member: [song_w, tag_w]}}`` and powers
    ``{"songs": p, "tags": p}`` (1 in a file written before powers were fitted) and the audio member's
    tail slots (``audio``: inference/audio_member.py, or None), checked against this work directory, these
    members and those of them that answer by popularity (``weak``: the ensemble's popularity fallback; the
    file's ``weak``, none in a file written before it) (BlendError otherwise)."""
    try:
        blend = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BlendError(f"{path}: cannot read the blend file ({e})") from None
    wrong = identity_mismatch(blend["workdir"], manifest) if isinstance(blend.get("workdir"), dict) else ["its files"]
    if wrong:
        raise BlendError(f"{path}: fitted on another work directory ({', '.join(wrong)}: sha256 differs); "
                         "fit the blend again on this one (python -m inference.fit_blend)")
    if sorted(blend.get("members", [])) != sorted(members):
        raise BlendError(f"{path}: fitted for the members {sorted(blend.get('members', []))}, but this ensemble "
                         f"has {sorted(members)}; give the same models or fit the blend again")
    if sorted(blend.get("weak", [])) != sorted(weak):
        raise BlendError(f"{path}: fitted with {sorted(blend.get('weak', [])) or 'no'} member(s) answering by "
                         f"popularity, but here {sorted(weak) or 'none'} do (the popularity fallback, or retrained "
                         f"models); fit the blend again")
    method = blend.get("method", "grid")
    if method not in ("grid", "ranker") or (method == "ranker" and "ranker" not in blend):
        raise BlendError(f"{path}: unknown blend method {method!r} or no ranker weights; fit the blend again")
    return {"method": method, "weights": blend.get("weights"), "ranker": blend.get("ranker"),
            "power": blend.get("power", {kind: 1.0 for kind in KINDS}), "audio": blend.get("audio")}
