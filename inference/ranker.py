"""A learned blend: a linear listwise ranker over the members' candidates, fitted on the tuning questions.

Every item some member proposed for a question is a candidate. Its score is a sum over the members plus a
term of the item's own::

    f(item) = sum_m w[t][m] . (s, sqrt(s), 1 / (1 + r), 1)_m  +  u[t] . (log(1 + n) / 10, log(1 + a) / 10, h)

``s`` is member m's score divided by its best on the question (inference/blend.py's ``normalised``), ``r``
its rank in m's list (0 = first) and the last 1 says that m proposed the item (the member's four features
are all 0 when it did not). ``n`` is the item's count in the training playlists; for songs (0 for tags),
``a`` is the days from the song's release to the question's update date and ``h`` the share of the
question's given songs that are by one of the song's artists (playlists gather an artist's songs; the
members see artists only through co-occurrence, and the DAE reads them as input). ``t`` is the question
type: each type's weights are a shared vector plus the type's own offsets, both L2-penalised (``lam``), so
a type with few tuning questions stays near the shared weights. Songs and tags have separate weights.

The weights maximise the listwise softmax likelihood of the answer items among each tuning question's
candidates (ListNet's top-one probability, Cao et al. 2007: ``-mean_{answers} log softmax(f)``, averaged
over the questions with an answer among their candidates), a smooth convex loss minimised with L-BFGS,
deterministic. ``lam`` is chosen from :data:`LAMBDAS` by two-fold cross-validation on the tuning
questions (the mean nDCG of each half scored by the weights fitted on the other); then members whose
absence raises that cross-validated nDCG are left out one at a time (their weights 0, per kind:
``_drop_members``), and the weights are refitted on all the tuning questions.

Because ``f`` is a sum of per-member terms and one per-item term, the ensemble ranks with it as with the
grid blend: each member's term per candidate, summed per item, plus the item term once (inference/ensemble.py).
Unlike the grid blend, nothing bounds the ranker below its best member on the tuning questions; the
cross-validated nDCG in its tuning table is the check.
"""

from __future__ import annotations

import numpy as np

from data.task import QUESTION_TYPES
from inference.blend import CUTOFF, KINDS, answers, merged, normalised
MEMBER_FEATURES = ("score", "sqrt_score", "reciprocal_rank", "proposed")
ITEM_FEATURES = ("log_count", "log_age", "artist_share")
LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1)
MIN_GAIN = 5e-4  # the cross-validated nDCG a member's absence must add for _drop_members to leave it out


def member_features(items: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[Q, K, 4] float32 features of one member's [Q, K] proposals (items -1 = none: all 0), in the order of
    :data:`MEMBER_FEATURES`."""
    proposed = (items >= 0).astype(np.float32)
    s = normalised(scores).astype(np.float32) * proposed
    rank = np.broadcast_to(1.0 / (1.0 + np.arange(items.shape[1], dtype=np.float32)), items.shape)
    return np.stack([s, np.sqrt(s), rank * proposed, proposed], axis=-1)


def item_features(items: np.ndarray, counts: np.ndarray, age_days: np.ndarray | None,
                  shares: np.ndarray | None) -> np.ndarray:
    """[..., 3] float32 features of the items ``items`` (-1 = none: all 0), in the order of
    :data:`ITEM_FEATURES`: log training count, log age (``age_days``, same shape as items, or None: 0) and
    the artist share (``shares``, same shape, or None: 0)."""
    valid = items >= 0
    count = np.where(valid, np.log1p(counts[np.where(valid, items, 0)]) / 10.0, 0.0)
    age = np.zeros(items.shape) if age_days is None else np.where(valid, np.log1p(np.maximum(age_days, 0)) / 10.0, 0.0)
    share = np.zeros(items.shape) if shares is None else np.where(valid, shares, 0.0)
    return np.stack([count, age, share], axis=-1).astype(np.float32)


def artists_table(song_artists: list[list[int]]) -> np.ndarray:
    """[n_songs, A] int32: each vocabulary song's artist indices, -1 past its own (A: the most of any song)."""
    width = max(1, max((len(a) for a in song_artists), default=1))
    table = np.full((len(song_artists), width), -1, dtype=np.int32)
    for s, artists in enumerate(song_artists):
        table[s, :len(artists)] = artists
    return table


def artist_shares(rows: np.ndarray, items: np.ndarray, given: list, artists: np.ndarray,
                  chunk: int = 512) -> np.ndarray:
    """The share of question ``rows``' given songs (``given``: per question, vocabulary song indices) that
    are by an artist of song ``items`` (rows and items: the same shape; items -1 give 0), summed over the
    song's artists. ``artists``: artists_table. Computed ``chunk`` questions at a time ([chunk, n_artists]
    floats)."""
    n_artists = int(artists.max(initial=-1)) + 1
    flat_rows, flat_items = rows.reshape(-1), items.reshape(-1)
    values = np.zeros(flat_rows.shape, dtype=np.float32)
    questions = np.unique(flat_rows)
    for part in np.array_split(questions, max(1, -(-len(questions) // chunk))):
        pick = np.flatnonzero(np.isin(flat_rows, part))
        share = np.zeros((len(part), n_artists + 1), dtype=np.float32)  # the last column: no artist
        for j, q in enumerate(part.tolist()):
            songs = np.asarray(given[q], dtype=np.int64)
            if len(songs):
                by = artists[songs].reshape(-1)
                np.add.at(share[j], by[by >= 0], 1.0 / len(songs))
        of_item = artists[np.maximum(flat_items[pick], 0)]  # [picked, A]
        of_item = np.where(of_item >= 0, of_item, n_artists)
        values[pick] = share[np.searchsorted(part, flat_rows[pick])[:, None], of_item].sum(axis=1)
    return np.where(items >= 0, values.reshape(items.shape), 0.0)


def ages(items: np.ndarray, days: np.ndarray, release: np.ndarray) -> np.ndarray:
    """[Q, K] days from each song's release (``release``: [n_songs] days) to its question's update day
    (``days``: [Q]); items -1 give 0."""
    return np.where(items >= 0, days[:, None] - release[np.where(items >= 0, items, 0)], 0)


class Pool:
    """One kind's candidates of every question, merged: one row per (question, distinct item) with its
    features [N, 4 M + 3] (member m's four at 4m..4m+3, then the item's three; ``rows`` [N] sorted), whether
    it is an answer [N], and the questions' ideal DCG [Q]. ``days``/``release``/``given``/``artists`` (songs
    only) give the age and the artist share; without them those features are 0."""

    def __init__(self, candidates: list, kind: str, truth: list[set], answer_sizes: np.ndarray,
                 counts: np.ndarray, days: np.ndarray | None = None, release: np.ndarray | None = None,
                 given: list | None = None, artists: np.ndarray | None = None):
        width, unique, inverse, valid = merged(candidates, kind)
        m = len(MEMBER_FEATURES)
        self.features = np.zeros((len(unique), m * len(candidates) + len(ITEM_FEATURES)), np.float32)
        start = 0
        for j, (c, mask) in enumerate(zip(candidates, valid)):
            block = member_features(*c.kind(kind)).reshape(-1, m)[mask]
            self.features[inverse[start:start + len(block)], m * j:m * (j + 1)] = block
            start += len(block)
        self.rows, items = unique // width, unique % width
        age = None if days is None else days[self.rows] - release[items]
        shares = None if given is None else artist_shares(self.rows, items, given, artists)
        self.features[:, -len(ITEM_FEATURES):] = item_features(items, counts, age, shares)
        self.relevant, self.idcg = answers(unique, width, truth, answer_sizes, kind)
        self.cutoff = CUTOFF[kind]
        self.questions = len(truth)

    def design(self, types: np.ndarray, present: list[str]) -> "Design":
        """[N, F (1 + T)]: the features, then a copy of them per question type of ``present`` (T of them), zero
        outside that type's rows (a :class:`Design`, which stores none of the zeros)."""
        if not present:
            raise ValueError("the ranker needs at least one tuning question")
        index = {t: j for j, t in enumerate(present)}
        return Design(self.features, np.array([index[t] for t in types])[self.rows], len(present))

    def ndcg(self, score: np.ndarray, questions: np.ndarray) -> np.ndarray:
        """[len(questions)] nDCG of ranking each question's candidates by ``score`` [N]."""
        order = np.lexsort((-score, self.rows))
        rows, relevant = self.rows[order], self.relevant[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
        hit = relevant & (rank < self.cutoff)
        dcg = np.bincount(rows[hit], weights=1.0 / np.log(rank[hit] + 2.0), minlength=self.questions)
        idcg = self.idcg[questions]
        return np.where(idcg > 0, dcg[questions] / np.where(idcg > 0, idcg, 1.0), 0.0)


class Design:
    """The ranker's design matrix [N, F (1 + T)] without its zeros: block 0 of its columns holds the features
    [N, F] of every row, block 1 + j the same features on the rows of the j-th question type and zeros
    elsewhere. Stored as the features sorted by type (``x`` [N, F]) and each type's row range, so a product
    with the matrix reads N x F numbers, not N x F (1 + T): z = x_j @ (w_0 + w_(1+j)) on type j's rows, and
    the gradient's block 1 + j is x_j^T r_j, block 0 their sum. Products are in the features' dtype
    (float32: the Pool's; float64 features give float64 products, for checking the gradient)."""

    def __init__(self, features: np.ndarray, row_type: np.ndarray, types: int):
        order = np.argsort(row_type, kind="stable")
        self.x, self.order = features[order], order  # x[i] is the original row order[i]
        self.bounds = np.searchsorted(row_type[order], np.arange(types + 1))
        self.bounds[-1] = len(order)
        self.row_type, self.types, self.f = row_type, types, features.shape[1]
        self.shape = (len(features), self.f * (1 + types))

    def __getitem__(self, rows: np.ndarray) -> "Design":
        """The rows where ``rows`` ([N] bool) holds, in their order."""
        return Design(self.x[np.argsort(self.order)][rows], self.row_type[rows], self.types)

    def __matmul__(self, w: np.ndarray) -> np.ndarray:
        """[N] (the features' dtype): the matrix times ``w`` [F (1 + T)]."""
        blocks = np.asarray(w, dtype=np.float64).reshape(1 + self.types, self.f)
        z = np.empty(self.shape[0], dtype=self.x.dtype)
        for j in range(self.types):
            a, b = self.bounds[j], self.bounds[j + 1]
            z[self.order[a:b]] = self.x[a:b] @ (blocks[0] + blocks[1 + j]).astype(self.x.dtype)
        return z

    def transposed_times(self, r: np.ndarray) -> np.ndarray:
        """[F (1 + T)] (the features' dtype): the matrix's transpose times ``r`` [N] (the same dtype)."""
        blocks = np.zeros((1 + self.types, self.f), dtype=self.x.dtype)
        for j in range(self.types):
            a, b = self.bounds[j], self.bounds[j + 1]
            blocks[1 + j] = r[self.order[a:b]] @ self.x[a:b]
        blocks[0] = blocks[1:].sum(axis=0)
        return blocks.reshape(-1)

    def dense(self) -> np.ndarray:
        """[N, F (1 + T)] float32: the matrix with its zeros (for tests)."""
        x = self.x[np.argsort(self.order)]
        return np.concatenate([x] + [x * (self.row_type == j)[:, None] for j in range(self.types)], axis=1)


def _objective(design: Design, rows: np.ndarray, relevant: np.ndarray, lam: float, fitted: np.ndarray):
    """_listwise's objective, ``loss(v)``, of the weights ``v`` of the ``fitted`` ([F] bool) columns (the others
    0): the mean over the questions of ``rows`` with an answer among their candidates of
    ``-mean_{answers} log softmax(z)`` (z = design @ w) + lam |v|^2, and its gradient [fitted.sum()] (scipy's
    ``jac=True``); and the number of questions in that mean (0: nothing to fit, and loss is undefined)."""
    answered = np.zeros(rows.max(initial=-1) + 1, dtype=bool)
    answered[rows[relevant]] = True
    keep = answered[rows]  # rows are sorted (Pool's order), so each question's candidates are contiguous
    x, target = design[keep], relevant[keep].astype(np.float64)  # products in x's dtype (a fit: float32), sums float64
    _, starts, group = np.unique(rows[keep], return_index=True, return_inverse=True)
    groups = len(starts)
    target = target / np.bincount(group, weights=target)[group]  # each question's answers share weight 1

    def loss(v):
        w = np.zeros(design.shape[1])
        w[fitted] = v
        z = (x @ w).astype(np.float64)
        top = np.maximum.reduceat(z, starts) if groups else z[:0]
        e = np.exp(z - top[group])
        total = np.bincount(group, weights=e, minlength=groups)
        value = (np.log(total) + top).sum() - target @ z
        grad = x.transposed_times((e / total[group] - target).astype(x.x.dtype))[fitted].astype(np.float64)
        return value / groups + lam * v @ v, grad / groups + 2 * lam * v

    return loss, groups


def _listwise(design: Design, rows: np.ndarray, relevant: np.ndarray, lam: float,
              columns: np.ndarray | None = None, start: np.ndarray | None = None) -> np.ndarray:
    """The weights [F] minimising the mean listwise softmax loss of the questions ``rows`` with an answer
    among their candidates, + lam |w|^2 (L-BFGS from ``start``, or 0); with ``columns`` ([F] bool) only those
    columns are fitted and the others' weights are 0. No question with an answer among its candidates (no
    rows, or no answer among them): all 0."""
    import scipy.optimize

    fitted = np.ones(design.shape[1], dtype=bool) if columns is None else columns
    loss, groups = _objective(design, rows, relevant, lam, fitted)
    w = np.zeros(design.shape[1])
    if not groups:
        return w
    # ftol: stop when an iteration lowers the loss by under 1e-7 of itself (far below what moves a ranking)
    w[fitted] = scipy.optimize.minimize(loss, np.zeros(fitted.sum()) if start is None else start[fitted], jac=True,
                                        method="L-BFGS-B", options={"maxiter": 300, "ftol": 1e-7}).x
    return w


def fit(candidates: dict, truth: dict[str, list[set]], answer_sizes: dict[str, np.ndarray], types: list[str],
        counts: dict[str, np.ndarray], days: np.ndarray, release: np.ndarray, given: list, artists: np.ndarray,
        lambdas: tuple = LAMBDAS) -> dict:
    """The ranker's weights ``{kind: {type: {"members": {member: [4]}, "item": [3]}}}``, the chosen ``lambda``
    and the ``dropped`` members per kind (:func:`_drop_members`: their weights are 0), and the tuning table
    ``{type: {kind: {"n", "ranker", "cv"}}}`` (in-sample and cross-validated nDCG).

    ``candidates``: member -> Candidates over the Q tuning questions; ``truth``/``answer_sizes`` as in
    inference/blend.py's fit; ``counts``: kind -> [n_items] training counts; ``days``: [Q] update days;
    ``release``: [n_songs] release days of the vocabulary songs; ``given``: per question, its given songs
    (vocabulary indices); ``artists``: artists_table.

    A question type without tuning questions takes the shared weights (its offsets are never fitted) and
    has no row in the tuning table; a kind with no answer among any question's candidates gets weights 0.
    No tuning question at all: ValueError (Pool.design)."""
    names = list(candidates)
    types = np.array(types)
    halves = np.arange(len(types)) % 2 == 1  # every other question: both halves hold every type
    out = {"weights": {}, "lambda": {}, "dropped": {}, "tuning": {t: {} for t in QUESTION_TYPES}}
    for kind in KINDS:
        pool = Pool([candidates[m] for m in names], kind, truth[kind], answer_sizes[kind], counts[kind],
                    *((days, release, given, artists) if kind == "songs" else ()))
        present = [t for t in QUESTION_TYPES if (types == t).any()]
        design = pool.design(types, present)
        cv, starts = {}, None
        for lam in sorted(lambdas, reverse=True):  # from the strongest penalty down, each fit starting from the last
            cv[lam] = _cross_validated(design, pool, halves, lam, starts=starts)
            starts = cv[lam][1]
        lam = max(lambdas, key=lambda value: (cv[value][0].mean(), -value))
        dropped, scored = _drop_members(design, pool, halves, lam, names, cv[lam])
        w = _listwise(design, pool.rows, pool.relevant, lam, _member_columns(design, pool, names, dropped),
                      np.mean(cv[lam][1], axis=0))
        in_sample = pool.ndcg(design @ w, np.arange(len(types)))
        f, m = pool.features.shape[1], len(MEMBER_FEATURES)
        out["lambda"][kind], out["dropped"][kind], out["weights"][kind] = lam, dropped, {}
        for t in QUESTION_TYPES:  # a type without tuning questions takes the shared weights
            j = present.index(t) if t in present else None
            effective = (w[:f] + (0 if j is None else w[f * (1 + j):f * (2 + j)])).tolist()
            out["weights"][kind][t] = {"members": {name: effective[m * i:m * (i + 1)] for i, name in enumerate(names)},
                                       "item": effective[m * len(names):]}
            mask = types == t
            if mask.any():
                out["tuning"][t][kind] = {"n": int(mask.sum()), "ranker": float(in_sample[mask].mean()),
                                          "cv": float(scored[mask].mean())}
    return out


def _member_columns(design: Design, pool: Pool, names: list[str], dropped: list[str]) -> np.ndarray:
    """[F (1 + T)] bool: the design's columns that do not belong to a ``dropped`` member."""
    f, m = pool.features.shape[1], len(MEMBER_FEATURES)
    keep = np.ones(f, dtype=bool)
    for name in dropped:
        i = names.index(name)
        keep[m * i:m * (i + 1)] = False
    return np.tile(keep, design.shape[1] // f)


def _cross_validated(design: Design, pool: Pool, halves: np.ndarray, lam: float,
                     columns: np.ndarray | None = None, starts: list | None = None) -> tuple[np.ndarray, list]:
    """[Q] nDCG of each tuning question ranked by the weights fitted on the other half (``halves``: [Q] bool),
    using only the design's ``columns`` (all when None), and the two halves' weights. ``starts``: weights
    to start each half's fit from (a nearby fit's: fewer iterations)."""
    scored, weights = np.zeros(len(halves)), []
    for k, held in enumerate((False, True)):
        fit_rows = halves[pool.rows] != held
        weights.append(_listwise(design[fit_rows], pool.rows[fit_rows], pool.relevant[fit_rows], lam, columns,
                                 None if starts is None else starts[k]))
        questions = np.flatnonzero(halves == held)
        scored[questions] = pool.ndcg(design @ weights[-1], questions)
    return scored, weights


def _drop_members(design: Design, pool: Pool, halves: np.ndarray, lam: float, names: list[str],
                  baseline: tuple[np.ndarray, list]) -> tuple[list[str], np.ndarray]:
    """Backward elimination on the tuning half: while leaving one member out (its weights 0) raises the mean
    cross-validated nDCG by more than :data:`MIN_GAIN`, leave out the member whose absence raises it most.
    Each member adds 4 weights per question type; one that the tuning questions fit mostly as noise costs
    more than it brings. ``baseline``: _cross_validated with every member. Returns the members left out and
    the final [Q] cross-validated nDCG."""
    dropped, (best, starts) = [], baseline
    while len(dropped) < len(names) - 1:
        trials = {name: _cross_validated(design, pool, halves, lam,
                                         _member_columns(design, pool, names, dropped + [name]), starts)
                  for name in names if name not in dropped}
        name = max(trials, key=lambda n: trials[n][0].mean())
        if trials[name][0].mean() <= best.mean() + MIN_GAIN:
            break
        dropped, (best, starts) = dropped + [name], trials[name]
    return dropped, best


def blended(weights: dict, types: list[str], proposals: dict[str, tuple[np.ndarray, np.ndarray]],
            item_feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted score split as the ensemble ranks with it: per member its term of each proposal
    (``proposals``: member -> (items [Q, K_m], scores [Q, K_m])), side by side [Q, sum K_m], and the item
    term [Q, C] of the item features ``item_feats`` [Q, C, 3] (item_features). ``weights``: one kind's
    ``fit()["weights"][kind]``; ``types``: the Q question types. Summing a candidate's member terms and
    adding its item term once gives the ``design @ w`` the weights were fitted on."""
    terms = []
    for member, (items, scores) in proposals.items():
        w = np.array([weights[t]["members"][member] for t in types], dtype=np.float32)
        w = w.reshape(len(types), len(MEMBER_FEATURES))  # [Q, 4], also with no question
        terms.append(np.einsum("qkf,qf->qk", member_features(items, scores), w))
    u = np.array([weights[t]["item"] for t in types], dtype=np.float32).reshape(len(types), len(ITEM_FEATURES))
    return np.concatenate(terms, axis=1), np.einsum("qcf,qf->qc", item_feats, u)
