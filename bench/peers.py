"""Benchmark peers: the classic recommenders the trained models are compared with (bench/quality.py).

Each peer is a function ``recommend(train_playlists, questions, song_meta, ..., timings=None) -> results``
in the official format (``[{"id", "songs", "tags"}]``), with the ensemble's filters (inference/ensemble.py):

* never a song or tag the question already holds;
* never a song released after the question's ``updt_date``, by the corrected release dates of
  ``data.vocab.release_dates(song_meta, train + questions)`` (0 = unknown, never filtered);
* exactly 100 unique songs and 10 unique tags: what the peer proposes first, then the most popular
  training songs released by that date and the most popular tags (inference.popular's ranking), then, on a
  question so old that even those run out, the oldest songs of song_meta.

The peers:

``popular``
    The official baseline's ranking (most frequent training songs, ties by smaller id; tags by frequency,
    ties by first appearance) with the release-date filter. inference.popular is the same without it.
``genre_popular``
    The most popular training songs of the question's dominant genre (``song_gn_gnr_basket``: the genre
    most of its songs carry; for a tags-only question, the genre its tags' training playlists lean to, each
    tag's genre distribution counted once), and the most frequent tags of the training playlists whose own
    dominant genre it is. Title-only and empty questions get ``popular``.
``item_cf``
    Item-neighbour collaborative filtering, the shape of the 2nd-place Kakao Arena solution. Items are
    songs, tags and title keywords (``data.title.normalise_title`` split on spaces); a binary playlist x
    item matrix over the training playlists and the questions (their given items only: they are known at
    inference time) has its columns L2-normalised, so ``X^T X`` is the item-item cosine similarity. A
    question's score of item j is ``n_j ** beta * sum_i w_i * cos(i, j) ** alpha`` over its songs and tags
    (``w = 1``) and title keywords (``w = title_weight``; a title-only question's keywords weigh 1), where
    n_j is the number of playlists holding j. ``alpha > 1`` sharpens toward the closest neighbours;
    ``beta`` is an idf-style popularity correction of the target: plain cosine (``beta = 0``) divides every
    target by ``sqrt(n_j)`` and so floods the lists with one-off songs and tags, ``beta = alpha / 2``
    removes that division. Title keywords give title-only questions neighbours. The three knobs are tuned by
    bench/quality.py on the tuning part of the validation questions (:data:`CF_GRID`).
``als``
    implicit's ``AlternatingLeastSquares`` (CPU, conjugate gradient) on the playlist x item matrix of the
    training playlists and the questions (folded in by fitting on their given items), items songs, tags and
    title keywords (so title-only questions get factors too), confidence ``1 + alpha * x``. Songs and tags
    are ranked by ``user_factors @ item_factors.T``. A question with no known item gets ``popular``.
    ``factors`` and the confidence ``alpha`` are tuned on the tuning part (:data:`ALS_GRID`);
    ``iterations = 15`` (implicit's default) and ``regularization = 0.1`` are fixed: at small scale, 32
    factors and alpha 20, regularization 0.1, 1, 10 and 50 gave scores within 0.001 of each other, while
    factors (16: 0.15, 32: 0.19, 64: 0.18, 128: 0.17) and alpha matter.
``ease``
    EASE (Steck 2019, models/ease.py): item-item weights ``B = -P / diag(P)``, ``P = (X^T X + lam I)^-1``,
    zero diagonal, over one item space of songs, tags and title keywords (``title_weight`` in ``X`` and in
    the queries; keywords are input-only, never recommended) of the training playlists, restricted to the
    ``n_items`` most frequent items. A question's scores are ``q @ B``; its positive-scored songs and tags
    rank first. ``n_items`` and ``lam`` are tuned (:data:`EASE_GRID`); ``G`` is dense, so ``n_items`` is
    the memory (and cubic time) knob.
``playlist_cf``
    Playlist-neighbour CF, the 2nd-place Kakao Arena recipe: every playlist is a vector of BM25-idf
    weights over its songs, tags and title keywords (the keywords also times ``title_weight``),
    L2-normalised; a question's ``k`` most cosine-similar training playlists n vote
    ``sim_n ** power`` for each song and tag they hold. ``k``, ``power`` and ``title_weight`` are tuned
    (:data:`PCF_GRID`).

Tuning (``tune``) follows data/task.py: every grid is scored on the *tuning* part of the validation
questions only (``data.task.parts``: half of each question type, fixed by id), never on the report
part; ``--questions-limit N`` scores only the first N of the tuning part, for quick runs.

Run one peer in its own process (bench/quality.py does, to measure its time and peak memory)::

    python -m bench.peers NAME --split SPLITDIR --meta SONG_META --out RESULTS [--settings JSON] [--timings OUT]
    python -m bench.peers tune NAME --split SPLITDIR --meta SONG_META --out TUNING.json [--questions-limit N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from data.melon import load_playlists, load_song_meta, song_meta_path, write_json
from data.title import normalise_title
from data.vocab import release_dates, updt_day
from data.task import SONGS_PER_PLAYLIST, TAGS_PER_PLAYLIST, parts, select
from data.ndcg import evaluate
from inference.neighbours import neighbour_settings
from inference.popular import _ranked as popularity_ranked

log = logging.getLogger("bench.peers")

# Defaults: configs/neighbours.yaml (shared with the ensemble's neighbour members; the values bench.peers tune
# chose at small scale, and why); the grids tuning searches are here.
_SETTINGS = neighbour_settings()
CF_DEFAULTS = _SETTINGS["item_cf"]
CF_GRID = {"alpha": [0.5, 1.0, 2.0], "beta": [0.0, 0.25, 0.5], "title_weight": [0.5, 1.0, 2.0]}
ALS_DEFAULTS = _SETTINGS["als"]
ALS_GRID = {"factors": [16, 32, 64], "alpha": [5.0, 20.0, 40.0]}
EASE_DEFAULTS = _SETTINGS["ease"]
EASE_GRID = {"n_items": [5000, 10000, 20000], "lam": [300.0, 1000.0, 3000.0]}
PCF_DEFAULTS = _SETTINGS["playlist_cf"]
PCF_GRID = {"k": [100, 200, 400, 800], "power": [0.5, 1.0, 2.0], "title_weight": [0.5, 1.0, 2.0]}


# ----------------------------------------------------------------------------------------------- filters

class Context:
    """What every peer shares: corrected release dates, the popular rankings, the filters and the fill."""

    def __init__(self, train: list[dict], questions: list[dict], song_meta: list[dict]):
        self.release = release_dates(song_meta, train + questions)
        # inference.popular's ranking, verbatim: songs by frequency (ties by smaller id), tags by frequency
        # (ties by first appearance)
        self.popular_songs = popularity_ranked(Counter(s for p in train for s in sorted(p["songs"])))
        self.popular_tags = popularity_ranked(Counter(t for p in train for t in p["tags"]))
        self._oldest = None

    def released_by(self, song: int, day: int) -> bool:
        return 0 <= song < len(self.release) and self.release[song] <= day

    def songs(self, question: dict, ranked) -> list[int]:
        """Exactly 100 songs: ``ranked`` first, then the popular fill, each unseen and released by the date."""
        day, seen, out = updt_day(question["updt_date"]), set(question["songs"]), []
        for source in (ranked, self.popular_songs):
            for s in source:
                s = int(s)
                if s not in seen and self.released_by(s, day):
                    out.append(s)
                    seen.add(s)
                    if len(out) == SONGS_PER_PLAYLIST:
                        return out
        if self._oldest is None:
            self._oldest = np.argsort(self.release, kind="stable")
        for s in self._oldest.tolist():  # a question older than nearly every played song
            if s not in seen and self.released_by(s, day):
                out.append(s)
                seen.add(s)
                if len(out) == SONGS_PER_PLAYLIST:
                    return out
        raise ValueError(f"question id {question['id']}: fewer than {SONGS_PER_PLAYLIST} songs of song_meta are "
                         f"released by its update date")

    def tags(self, question: dict, ranked) -> list[str]:
        """Exactly 10 tags: ``ranked`` first, then the popular fill, none the question holds."""
        seen, out = set(question["tags"]), []
        for source in (ranked, self.popular_tags):
            for t in source:
                if t not in seen:
                    out.append(t)
                    seen.add(t)
                    if len(out) == TAGS_PER_PLAYLIST:
                        return out
        raise ValueError(f"the training playlists hold fewer than {TAGS_PER_PLAYLIST} tags that question id "
                         f"{question['id']} does not hold")


def _timed(timings: dict | None, key: str, start: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


# ----------------------------------------------------------------------------------------------- popular

def popular(train: list[dict], questions: list[dict], song_meta: list[dict], timings: dict | None = None) -> list[dict]:
    """Most popular songs released by each question's date and most popular tags, unseen."""
    start = time.perf_counter()
    ctx = Context(train, questions, song_meta)
    _timed(timings, "fit_s", start)
    start = time.perf_counter()
    results = [{"id": q["id"], "songs": ctx.songs(q, ()), "tags": ctx.tags(q, ())} for q in questions]
    _timed(timings, "recommend_s", start)
    return results


# ----------------------------------------------------------------------------------------------- genre

def _dominant(counts: Counter, order: dict) -> str | None:
    """The most frequent key; ties by ``order`` (overall genre frequency rank), then by code."""
    if not counts:
        return None
    return min(counts, key=lambda g: (-counts[g], order.get(g, len(order)), g))


def genre_popular(train: list[dict], questions: list[dict], song_meta: list[dict],
                  timings: dict | None = None) -> list[dict]:
    """The most popular songs and tags of the question's dominant genre (see the module docstring)."""
    start = time.perf_counter()
    ctx = Context(train, questions, song_meta)
    genres = [m["song_gn_gnr_basket"] for m in song_meta]

    def song_genres(songs) -> Counter:
        return Counter(g for s in songs if 0 <= s < len(genres) for g in genres[s])

    overall = song_genres(s for p in train for s in p["songs"])
    order = {g: i for i, (g, _) in enumerate(sorted(overall.items(), key=lambda kv: (-kv[1], kv[0])))}
    songs_of = defaultdict(list)  # genre -> its training songs, most popular first
    for s in ctx.popular_songs:
        for g in genres[s]:
            songs_of[g].append(s)
    tag_counts, tag_genres = defaultdict(Counter), defaultdict(Counter)
    for p in train:
        playlist_genres = song_genres(p["songs"])
        g = _dominant(playlist_genres, order)
        if g is not None:
            tag_counts[g].update(p["tags"])
        total = sum(playlist_genres.values())
        for t in p["tags"]:  # each tag's genre distribution, every playlist weighing 1
            for code, c in playlist_genres.items():
                tag_genres[t][code] += c / total
    tags_of = {g: popularity_ranked(c) for g, c in tag_counts.items()}
    _timed(timings, "fit_s", start)

    start = time.perf_counter()
    results = []
    for q in questions:
        if q["songs"]:
            g = _dominant(song_genres(q["songs"]), order)
        else:
            lean = Counter()
            for t in q["tags"]:
                total = sum(tag_genres[t].values())
                for code, c in tag_genres[t].items():
                    lean[code] += c / total
            g = _dominant(lean, order)
        results.append({"id": q["id"], "songs": ctx.songs(q, songs_of.get(g, ())), "tags": ctx.tags(q, tags_of.get(g, ()))})
    _timed(timings, "recommend_s", start)
    return results


# ----------------------------------------------------------------------------------------------- items

def title_words(playlist: dict) -> list[str]:
    """The normalised title's words, each once, in order."""
    return list(dict.fromkeys(w for w in normalise_title(playlist.get("plylst_title", "")).split(" ") if w))


class Items:
    """One column index over songs, tags and title keywords (``[songs | tags | words]``), and the binary
    playlist x item matrix of a list of playlists."""

    def __init__(self, playlists: list[dict], with_words: bool = True):
        self.songs = np.array(sorted({s for p in playlists for s in p["songs"]}), dtype=np.int64)
        self.tags = sorted({t for p in playlists for t in p["tags"]})
        self.words = sorted({w for p in playlists for w in title_words(p)}) if with_words else []
        self.with_words = with_words
        self.song_col = {int(s): i for i, s in enumerate(self.songs)}
        self.tag_col = {t: len(self.songs) + i for i, t in enumerate(self.tags)}
        self.word_col = {w: len(self.songs) + len(self.tags) + i for i, w in enumerate(self.words)}
        self.n_songs, self.n_tags = len(self.songs), len(self.tags)
        self.size = self.n_songs + self.n_tags + len(self.words)

    def columns(self, playlist: dict) -> tuple[list[int], list[int], list[int]]:
        """The playlist's known song, tag and title-word columns."""
        songs = [self.song_col[s] for s in playlist["songs"] if s in self.song_col]
        tags = [self.tag_col[t] for t in playlist["tags"] if t in self.tag_col]
        words = [self.word_col[w] for w in title_words(playlist) if w in self.word_col] if self.with_words else []
        return songs, tags, words

    def matrix(self, playlists: list[dict], word_weight: float = 1.0):
        """CSR playlists x items: 1 per song and tag, ``word_weight`` per title word (float32)."""
        import scipy.sparse as sp

        rows, cols, vals = [], [], []
        for r, p in enumerate(playlists):
            songs, tags, words = self.columns(p)
            for c in songs + tags:
                rows.append(r), cols.append(c), vals.append(1.0)
            for c in words:
                rows.append(r), cols.append(c), vals.append(word_weight)
        return sp.csr_matrix((np.array(vals, dtype=np.float32), (np.array(rows, dtype=np.int64),
                              np.array(cols, dtype=np.int64))), shape=(len(playlists), self.size))

    def blocked(self, ctx: Context, questions: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Per question, the song columns it may not get (held, or released after its date) and the tag
        columns it holds."""
        release = ctx.release[self.songs]
        days = np.array([updt_day(q["updt_date"]) for q in questions])
        songs = release[None, :] > days[:, None]
        tags = np.zeros((len(questions), self.n_tags), dtype=bool)
        for i, q in enumerate(questions):
            s, t, _ = self.columns(q)
            songs[i, s] = True
            tags[i, [c - self.n_songs for c in t]] = True
        return songs, tags


def _top_positive(scores: np.ndarray, blocked: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row, the column indices of the k best unblocked scores that are > 0, best first, ties by column.

    Each row's k-th best is at least the k-th best of every 16th column, so only the columns at or above
    that cheap threshold are ranked: exact, and far quicker than a partition of every column."""
    out = []
    for row, row_blocked in zip(scores, blocked):
        row = np.where(row_blocked, 0, row)
        sample = row[::16]
        threshold = np.partition(sample, len(sample) - k)[len(sample) - k] if len(sample) > k else 0
        cols = np.flatnonzero((row >= threshold) & (row > 0))
        out.append(_best(cols, row[cols], k))
    return out


def _best(cols: np.ndarray, vals: np.ndarray, k: int) -> np.ndarray:
    """The columns of the k largest values, largest first, ties by smaller column."""
    if len(vals) > k:
        threshold = vals[np.argpartition(-vals, k - 1)[:k]].min()  # every column tied at it competes
        chosen = vals >= threshold
        cols, vals = cols[chosen], vals[chosen]
    return cols[np.lexsort((cols, -vals))][:k]


def _batch_size(columns: int) -> int:
    """Questions per dense score block: about 32M floats (128 MB float32)."""
    return int(max(16, min(512, 32_000_000 // max(columns, 1))))


def _to_results(ctx: Context, items: Items, questions: list[dict], song_top, tag_top) -> list[dict]:
    return [{"id": q["id"], "songs": ctx.songs(q, items.songs[s]),
             "tags": ctx.tags(q, [items.tags[c] for c in t.tolist()])}
            for q, s, t in zip(questions, song_top, tag_top)]


# ----------------------------------------------------------------------------------------------- item CF

class ItemCF:
    """Item-item cosine neighbours over songs, tags and title keywords (see the module docstring)."""

    def __init__(self, train: list[dict], questions: list[dict], song_meta: list[dict]):
        import scipy.sparse as sp

        self.ctx = Context(train, questions, song_meta)
        self.items = Items(train + questions)
        x = self.items.matrix(train + questions)
        x.data[:] = 1.0
        self.counts = np.asarray(x.sum(axis=0)).ravel()
        norms = np.sqrt(self.counts)
        norms[norms == 0] = 1.0
        xn = (x @ sp.diags((1.0 / norms).astype(np.float32))).tocsr()  # L2-normalised columns
        self.xn_t = xn.T.tocsr()  # items x playlists: one item's playlists are one row
        targets = self.items.n_songs + self.items.n_tags  # only songs and tags are ever recommended
        self.xn_targets = xn[:, :targets].tocsr()  # playlists x targets
        self.targets_t = self.xn_t[:targets]  # targets x playlists

    def _query(self, columns: list, title_weight: float, used: np.ndarray | None = None):
        """Questions x items (or x ``used`` items): 1 per song and tag, the title keywords' weight per word."""
        import scipy.sparse as sp

        position = None if used is None else {int(c): i for i, c in enumerate(used)}
        rows, cols, vals = [], [], []
        for r, (songs, tags, words) in enumerate(columns):
            weight = title_weight if songs or tags else 1.0  # a title-only question: its words
            for c, v in [(c, 1.0) for c in songs + tags] + [(c, weight) for c in words]:
                rows.append(r), cols.append(c if position is None else position[c]), vals.append(v)
        width = self.items.size if used is None else len(used)
        return sp.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=(len(columns), width))

    def _scores(self, columns: list, setting: dict, similarity: dict) -> np.ndarray:
        """Questions x targets, dense: ``sum_i w_i * cos(i, j) ** alpha``, times ``n_j ** beta``.

        For ``alpha = 1`` the sum is ``((Q X^T) X)``: the question's weight on each playlist, then those
        playlists' items, with no item-item matrix. At melon scale a question's items share playlists with
        a large share of all songs (45% of the targets in a profile of 128 melon questions), so the product
        is accumulated densely. Otherwise the rows of ``X^T X`` that the batch uses are made once per batch
        (``similarity``) and raised to ``alpha``."""
        if setting["alpha"] == 1.0:
            playlists = (self._query(columns, setting["title_weight"]) @ self.xn_t).T.toarray()  # playlists x Q
            scores = np.ascontiguousarray((self.targets_t @ playlists).T)
        else:
            if "rows" not in similarity:
                used = np.array(sorted({c for cols in columns for part in cols for c in part}), dtype=np.int64)
                similarity["used"] = used
                similarity["rows"] = (self.xn_t[used] @ self.xn_targets).tocsr()
            sim = similarity["rows"].copy()
            sim.data = np.power(sim.data, setting["alpha"], dtype=np.float32)
            scores = (self._query(columns, setting["title_weight"], similarity["used"]) @ sim).toarray()
        if setting["beta"]:
            scores *= np.power(self.counts[:scores.shape[1]], setting["beta"], dtype=np.float32)[None, :]
        return scores

    def recommend(self, questions: list[dict], settings: list[dict]) -> list[list[dict]]:
        """Results for each settings dict (``alpha``, ``beta``, ``title_weight``), sharing each batch's
        similarities."""
        items, n_songs = self.items, self.items.n_songs
        out = [[] for _ in settings]
        batch = _batch_size(items.n_songs + items.n_tags)
        for start in range(0, len(questions), batch):
            qs = questions[start:start + batch]
            blocked_songs, blocked_tags = items.blocked(self.ctx, qs)
            columns = [items.columns(q) for q in qs]
            similarity = {}
            for k, setting in enumerate(settings):
                scores = self._scores(columns, setting, similarity)
                song_top = _top_positive(scores[:, :n_songs], blocked_songs, SONGS_PER_PLAYLIST)
                tag_top = _top_positive(scores[:, n_songs:], blocked_tags, TAGS_PER_PLAYLIST)
                out[k].extend(_to_results(self.ctx, items, qs, song_top, tag_top))
        return out


def item_cf(train: list[dict], questions: list[dict], song_meta: list[dict], alpha: float = CF_DEFAULTS["alpha"],
            beta: float = CF_DEFAULTS["beta"], title_weight: float = CF_DEFAULTS["title_weight"],
            timings: dict | None = None) -> list[dict]:
    """Item-neighbour CF (see the module docstring): ``alpha`` the similarity exponent, ``beta`` the target
    popularity exponent, ``title_weight`` the weight of a title keyword next to a song or tag."""
    start = time.perf_counter()
    model = ItemCF(train, questions, song_meta)
    _timed(timings, "fit_s", start)
    start = time.perf_counter()
    results = model.recommend(questions, [{"alpha": alpha, "beta": beta, "title_weight": title_weight}])[0]
    _timed(timings, "recommend_s", start)
    return results


# ----------------------------------------------------------------------------------------------- ALS

class ALS:
    """implicit's ALS on playlists x (songs + tags + title keywords), questions folded into the fit."""

    def __init__(self, train: list[dict], questions: list[dict], song_meta: list[dict], factors: int,
                 regularization: float, alpha: float, iterations: int, seed: int = 0):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.ctx = Context(train, questions, song_meta)
        self.items = Items(train + questions)
        matrix = self.items.matrix(train + questions)
        matrix.data[:] = 1.0
        self.first_question = len(train)
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; a BLAS thread pool would fight it
            self.model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                                 iterations=iterations, random_state=seed)
            self.model.fit(matrix, show_progress=False)
        self.has_items = np.diff(matrix.indptr)[self.first_question:] > 0

    def recommend(self, questions: list[dict]) -> list[dict]:
        items, n_songs, n_tags = self.items, self.items.n_songs, self.items.n_tags
        users = np.asarray(self.model.user_factors)
        item_factors = np.asarray(self.model.item_factors)[:n_songs + n_tags]
        results = []
        batch = _batch_size(n_songs + n_tags)
        for start in range(0, len(questions), batch):
            qs = questions[start:start + batch]
            rows = self.first_question + start + np.arange(len(qs))
            scores = users[rows] @ item_factors.T
            # ALS scores may be negative: shifted so that every unblocked item ranks before the popular fill,
            # except for a question with no known item (no factors to speak of), which popularity decides
            scores = scores - scores.min(axis=1, keepdims=True) + 1e-6
            scores[~self.has_items[start:start + len(qs)]] = 0.0
            blocked_songs, blocked_tags = items.blocked(self.ctx, qs)
            song_top = _top_positive(scores[:, :n_songs], blocked_songs, SONGS_PER_PLAYLIST)
            tag_top = _top_positive(scores[:, n_songs:], blocked_tags, TAGS_PER_PLAYLIST)
            results.extend(_to_results(self.ctx, items, qs, song_top, tag_top))
        return results


def als(train: list[dict], questions: list[dict], song_meta: list[dict], factors: int = ALS_DEFAULTS["factors"],
        regularization: float = ALS_DEFAULTS["regularization"], alpha: float = ALS_DEFAULTS["alpha"],
        iterations: int = ALS_DEFAULTS["iterations"], seed: int = 0, timings: dict | None = None) -> list[dict]:
    """implicit ALS (see the module docstring)."""
    start = time.perf_counter()
    model = ALS(train, questions, song_meta, factors, regularization, alpha, iterations, seed)
    _timed(timings, "fit_s", start)
    start = time.perf_counter()
    results = model.recommend(questions)
    _timed(timings, "recommend_s", start)
    return results


# ----------------------------------------------------------------------------------------------- EASE

class EaseCF:
    """EASE (models/ease.py) over songs, tags and title keywords of the training playlists.

    ``x`` is the training playlists x items matrix (1 per song and tag, ``title_weight`` per title keyword);
    EASE keeps its ``n_items`` most frequent columns. Only songs and tags are recommended: a kept title
    keyword only feeds the scores."""

    def __init__(self, train: list[dict], questions: list[dict], song_meta: list[dict], title_weight: float):
        self.ctx = Context(train, questions, song_meta)
        self.items = Items(train)
        self.title_weight = title_weight
        self.x = self.items.matrix(train, title_weight)

    def fit(self, n_items: int, lam: float, g=None):
        """EASE on the ``n_items`` most frequent columns; ``g`` a precomputed Gram of those columns (kept)."""
        from models.ease import EASE, frequent_columns, gram, weights

        columns = frequent_columns(self.x, n_items)
        g = gram(self.x, columns) if g is None else g.copy()
        return EASE(columns, weights(g, lam))

    def recommend(self, questions: list[dict], model) -> list[dict]:
        """Songs and tags by ``q @ B`` (positive scores only; the fill after), for a fitted ``model``."""
        items, n_songs = self.items, self.items.n_songs
        targets = n_songs + items.n_tags
        kept = model.columns < targets  # the kept songs and tags (the rest are title keywords)
        results = []
        batch = _batch_size(targets)
        for start in range(0, len(questions), batch):
            qs = questions[start:start + batch]
            scores = np.zeros((len(qs), targets), dtype=np.float32)
            scores[:, model.columns[kept]] = model.scores(items.matrix(qs, self.title_weight))[:, kept]
            blocked_songs, blocked_tags = items.blocked(self.ctx, qs)
            song_top = _top_positive(scores[:, :n_songs], blocked_songs, SONGS_PER_PLAYLIST)
            tag_top = _top_positive(scores[:, n_songs:], blocked_tags, TAGS_PER_PLAYLIST)
            results.extend(_to_results(self.ctx, items, qs, song_top, tag_top))
        return results


def ease(train: list[dict], questions: list[dict], song_meta: list[dict], n_items: int = EASE_DEFAULTS["n_items"],
         lam: float = EASE_DEFAULTS["lam"], title_weight: float = EASE_DEFAULTS["title_weight"],
         timings: dict | None = None) -> list[dict]:
    """EASE (see the module docstring): ``n_items`` kept columns, L2 penalty ``lam``."""
    start = time.perf_counter()
    peer = EaseCF(train, questions, song_meta, title_weight)
    model = peer.fit(n_items, lam)
    _timed(timings, "fit_s", start)
    start = time.perf_counter()
    results = peer.recommend(questions, model)
    _timed(timings, "recommend_s", start)
    return results


# ----------------------------------------------------------------------------------------------- playlist CF

class PlaylistCF:
    """Playlist-neighbour CF: each question's k most similar training playlists vote for their songs and tags.

    A playlist's vector holds ``idf_j`` for each of its songs and tags and ``title_weight * idf_j`` for each
    title keyword, L2-normalised; ``idf_j = log(1 + (P - n_j + 0.5) / (n_j + 0.5))`` (BM25's), P training
    playlists, n_j of them holding j. Cosine similarity = dot product of the vectors."""

    def __init__(self, train: list[dict], questions: list[dict], song_meta: list[dict]):
        self.ctx = Context(train, questions, song_meta)
        self.items = Items(train)
        self.binary = self.items.matrix(train)
        self.binary.data[:] = 1.0
        counts = np.asarray(self.binary.sum(axis=0)).ravel()
        self.idf = np.log1p((len(train) - counts + 0.5) / (counts + 0.5)).astype(np.float32)
        self.targets = self.binary[:, :self.items.n_songs + self.items.n_tags].tocsr()  # train x targets

    def vectors(self, x, title_weight: float):
        """[rows, items] CSR: the binary rows ``x`` weighted by idf (title keywords also by ``title_weight``)
        and L2-normalised (an empty row stays empty)."""
        import scipy.sparse as sp

        weight = self.idf.copy()
        weight[self.items.n_songs + self.items.n_tags:] *= title_weight
        w = (x @ sp.diags(weight)).tocsr()
        norms = np.sqrt(np.asarray(w.multiply(w).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return (sp.diags((1.0 / norms).astype(np.float32)) @ w).tocsr()

    def _votes(self, sim: np.ndarray, k: int, power: float) -> np.ndarray:
        """[Q, targets] dense: ``sum over the k most similar playlists n of sim_n ** power * x_nj``.

        ``sim`` is [Q, train] dense cosine similarity; only positive similarities vote."""
        import scipy.sparse as sp

        k = min(k, sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        values = np.power(np.maximum(np.take_along_axis(sim, top, axis=1), 0.0), power, dtype=np.float32)
        neighbours = sp.csr_matrix((values.ravel(), top.ravel(), np.arange(0, top.size + 1, k)), shape=sim.shape)
        return (neighbours @ self.targets).toarray()

    def recommend(self, questions: list[dict], settings: list[dict]) -> list[list[dict]]:
        """Results for each settings dict (``k``, ``power``, ``title_weight``), sharing each title weight's
        similarities."""
        items, n_songs = self.items, self.items.n_songs
        out = [[] for _ in settings]
        for title_weight in sorted({s["title_weight"] for s in settings}):
            train_t = self.vectors(self.binary, title_weight).T.tocsr()  # items x train
            chosen = [i for i, s in enumerate(settings) if s["title_weight"] == title_weight]
            batch = _batch_size(max(self.targets.shape[1], train_t.shape[1]))
            for start in range(0, len(questions), batch):
                qs = questions[start:start + batch]
                q = items.matrix(qs)
                q.data[:] = 1.0
                sim = (self.vectors(q, title_weight) @ train_t).toarray()  # Q x train
                blocked_songs, blocked_tags = items.blocked(self.ctx, qs)
                for i in chosen:
                    scores = self._votes(sim, settings[i]["k"], settings[i]["power"])
                    song_top = _top_positive(scores[:, :n_songs], blocked_songs, SONGS_PER_PLAYLIST)
                    tag_top = _top_positive(scores[:, n_songs:], blocked_tags, TAGS_PER_PLAYLIST)
                    out[i].extend(_to_results(self.ctx, items, qs, song_top, tag_top))
        return out


def playlist_cf(train: list[dict], questions: list[dict], song_meta: list[dict], k: int = PCF_DEFAULTS["k"],
                power: float = PCF_DEFAULTS["power"], title_weight: float = PCF_DEFAULTS["title_weight"],
                timings: dict | None = None) -> list[dict]:
    """Playlist-neighbour CF (see the module docstring): ``k`` neighbours, similarity exponent ``power``."""
    start = time.perf_counter()
    model = PlaylistCF(train, questions, song_meta)
    _timed(timings, "fit_s", start)
    start = time.perf_counter()
    results = model.recommend(questions, [{"k": k, "power": power, "title_weight": title_weight}])[0]
    _timed(timings, "recommend_s", start)
    return results


PEERS = {"popular": popular, "genre_popular": genre_popular, "item_cf": item_cf, "als": als, "ease": ease,
         "playlist_cf": playlist_cf}
DEFAULTS = {"popular": {}, "genre_popular": {}, "item_cf": CF_DEFAULTS, "als": ALS_DEFAULTS, "ease": EASE_DEFAULTS,
            "playlist_cf": PCF_DEFAULTS}
GRIDS = {"item_cf": CF_GRID, "als": ALS_GRID, "ease": EASE_GRID, "playlist_cf": PCF_GRID}


# ----------------------------------------------------------------------------------------------- tuning

def grid(spec: dict) -> list[dict]:
    keys = list(spec)
    return [dict(zip(keys, values)) for values in itertools.product(*(spec[k] for k in keys))]


def tune(name: str, train: list[dict], questions: list[dict], answers: list[dict], song_meta: list[dict],
         limit: int | None = None) -> dict:
    """Score every setting of the peer's grid on the protocol's tuning part of the questions; the best wins.

    The tuning part is ``data.task.parts(questions)["tune"]`` (half of each question type); the
    report part is never scored here. ``limit`` (quick runs) scores only the first ``limit`` questions of the
    tuning part. The model is fitted with all the questions known, as when it is benchmarked (item_cf and
    als fold their given items in); only the scored questions are restricted."""
    scored = select(questions, parts(questions)["tune"])
    scored = scored[:limit] if limit else scored
    by_id = {a["id"]: a for a in answers}
    truth = [by_id[q["id"]] for q in scored]
    rows = [{"settings": setting, **_summary(evaluate(truth, results, scored))}
            for setting, results in _grid_results(name, train, questions, scored, song_meta)]
    for row in rows:
        log.info("%s %s: score %.4f", name, row["settings"], row["score"])
    best = max(rows, key=lambda r: r["score"])
    return {"peer": name, "questions_scored": len(scored), "questions_part": "tune",
            "questions_protocol": "data.task.parts(questions)['tune']" + (f"[:{limit}]" if limit else ""),
            "grid": GRIDS[name], "rows": rows, "best": best["settings"], "best_score": best["score"]}


def _grid_results(name: str, train: list[dict], questions: list[dict], scored: list[dict], song_meta: list[dict]):
    """(settings, results on ``scored``) for every setting of the peer's grid, sharing what the settings share."""
    if name not in GRIDS:
        raise ValueError(f"{name} has no knobs to tune")
    fixed = {k: v for k, v in DEFAULTS[name].items() if k not in GRIDS[name]}
    settings = [{**fixed, **s} for s in grid(GRIDS[name])]
    if name == "item_cf":
        return zip(settings, ItemCF(train, questions, song_meta).recommend(scored, settings))
    if name == "playlist_cf":
        return zip(settings, PlaylistCF(train, questions, song_meta).recommend(scored, settings))
    if name == "als":
        return ((s, ALS(train, questions, song_meta, **s).recommend(scored)) for s in settings)
    if name == "ease":
        return _ease_grid(train, questions, scored, song_meta, settings)
    raise ValueError(f"no tuner for {name}")


def _ease_grid(train, questions, scored, song_meta, settings):
    """EASE's grid: one Gram matrix per (title_weight, n_items), one inverse per lambda."""
    from models.ease import frequent_columns, gram

    peers, grams = {}, {}
    for s in settings:
        tw, n = s["title_weight"], s["n_items"]
        if tw not in peers:
            peers = {tw: EaseCF(train, questions, song_meta, tw)}  # one title weight's matrix at a time
        if (tw, n) not in grams:
            start = time.perf_counter()
            grams = {(tw, n): gram(peers[tw].x, frequent_columns(peers[tw].x, n))}
            log.info("ease: Gram of %d columns in %.1f s", n, time.perf_counter() - start)
        start = time.perf_counter()
        model = peers[tw].fit(n, s["lam"], grams[(tw, n)])
        fitted = time.perf_counter()
        results = peers[tw].recommend(scored, model)
        log.info("ease %s: inverse %.1f s, %d answers %.1f s", s, fitted - start, len(scored),
                 time.perf_counter() - fitted)
        yield s, results


def _summary(scores: dict) -> dict:
    return {k: scores[k] for k in ("music_ndcg", "tag_ndcg", "score")}


# ----------------------------------------------------------------------------------------------- CLI

def _load(split: Path, meta: Path):
    return (load_playlists(split / "orig/train.json"), load_playlists(split / "questions/val.json"),
            load_song_meta(song_meta_path(meta)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(PEERS) + ["tune"])
    parser.add_argument("tuned", nargs="?", choices=sorted(GRIDS), help="with 'tune': the peer to tune")
    parser.add_argument("--split", type=Path, required=True, help="a folder written by data.split")
    parser.add_argument("--meta", type=Path, required=True, help="song_meta.json, or the data folder holding it")
    parser.add_argument("--out", type=Path, required=True, help="results (or, with 'tune', tuning) JSON to write")
    parser.add_argument("--settings", default="{}", help="JSON object of keyword arguments for the peer")
    parser.add_argument("--timings", type=Path, help="write fit_s / recommend_s / load_s here")
    parser.add_argument("--questions-limit", type=int,
                        help="with 'tune': score only the first N questions of the tuning part (quick runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("data.melon").setLevel(logging.WARNING)
    start = time.perf_counter()
    train, questions, song_meta = _load(args.split, args.meta)
    timings = {"load_s": time.perf_counter() - start}
    if args.name == "tune":
        if args.tuned is None:
            parser.error("tune needs the peer to tune: " + ", ".join(sorted(GRIDS)))
        answers = load_playlists(args.split / "answers/val.json")
        start = time.perf_counter()
        result = tune(args.tuned, train, questions, answers, song_meta, args.questions_limit)
        result["tuning_s"] = time.perf_counter() - start
        write_json(result, args.out)
        log.info("%s: best %s (score %.4f on %d questions of the tuning part)", args.tuned, result["best"],
                 result["best_score"], result["questions_scored"])
        return 0
    settings = {**DEFAULTS[args.name], **json.loads(args.settings)}
    results = PEERS[args.name](train, questions, song_meta, **settings, timings=timings)
    write_json(results, args.out)
    if args.timings:
        write_json({**timings, "settings": settings}, args.timings)
    log.info("%s %s: fit %.1f s, recommend %.1f s", args.name, settings, timings["fit_s"], timings["recommend_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
