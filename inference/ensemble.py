"""The ensemble: the DAE, the title BERT, neighbour models and popularity, blended into 100 songs and
10 tags per question.

Per question (configs/ensemble.yaml holds the numbers):

* each member proposes its top candidates (500 songs / 50 tags) after removing the given songs/tags and
  the songs released after the playlist's ``updt_date`` (corrected release dates, data/vocab.py): the
  DAE when the question gives songs or tags, the title model when its normalised title is not empty, the
  Word2Vec member (hvd_train/word2vec.py) when it gives any of them, each
  neighbour member (inference/neighbours.py: item_cf, playlist_cf or ease, named by its kind) when it
  gives songs, tags or title pieces, popularity always;
* with a fitted blend (``--blend``, inference/blend.py: weights per question type, fitted on the
  protocol's tuning questions by ``python -m inference.fit_blend``) an item's score is the weighted sum
  of each member's score divided by that member's best score on the question (the grid blend), or the
  learned ranker's score (inference/ranker.py: a linear function of each member's score and rank and of
  the item's popularity and age, fitted by the same command);
* without one, the reference design's blend of the two BERTs: song score
  ``p_dae * n/(w+n) + p_title * w/(w+n)`` with n = number of given songs + tags and w the title weight;
  tag score ``q_dae + v * q_title``; a model that does not propose an item contributes 0;
* with the audio member (``--audio``, inference/audio_member.py) the last songs of the list, as many as
  the blend file's slots for the question's type, are songs outside the vocabulary nearest by audio and
  predicted tags to what the question gives;
* the rest (a question with nothing usable, or too few candidates) is filled with the most frequent
  training songs released by the update date and the most frequent tags, so that every question gets
  exactly 100 unique songs and 10 unique tags.

Every member is declared in inference/members.py (its name, flag, loader). The models are read from their
run directories' exports (weights.npz + config.json, no pickle) and must have been trained on the same work
directory: the vocabulary and tokenizer hashes are checked, and so is a blend file's.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from data.task import SONGS_PER_PLAYLIST, TAGS_PER_PLAYLIST, question_type
from data.vocab import updt_day
from data.workdir import index_of, to_record, verify_workdir
from models.config import ConfigError, parse_section
from models.export import below_popularity
from models.ranking import top_rows
from inference import blend, ranker
from inference import members as registry
from inference.audio_member import with_tail
from inference.blend import BlendError, Candidates, normalised
from inference.exports import ExportError
from inference.ranker import artists_table

log = logging.getLogger("inference")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ensemble.yaml"


@dataclass(frozen=True)
class Settings:
    """configs/ensemble.yaml (its defaults and comments), typed."""
    candidate_songs: int
    candidate_tags: int
    title_weight: float  # w in the song blend
    title_tag_weight: float  # v in the tag blend
    batch_size: int
    popularity_fallback: bool  # a model below popularity on its validation questions answers with popularity

    @classmethod
    def load(cls, path: str | Path = DEFAULT_CONFIG) -> "Settings":
        """The file's settings; a ValueError (ConfigError) naming a missing, unknown or malformed key."""
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from None
        try:
            return parse_section(cls, raw, "ensemble")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def blend_weights(n: np.ndarray, w: float, v: float) -> tuple:
    """Per question with n given songs + tags: the weights of (DAE songs, title songs, DAE tags, title tags).

    Songs: ``n/(w+n)`` for the DAE and ``w/(w+n)`` for the title model (1 when nothing is given: the title
    model alone); tags: 1 for the DAE and ``v`` for the title model.
    """
    n = np.asarray(n, dtype=np.float64)
    return n / (w + n), np.where(n > 0, w / (w + n), 1.0), np.ones_like(n), np.full_like(n, v)


class Ensemble:
    """Everything inference needs from a work directory and the members' run directories, loaded once.

    ``runs``: {member name: run directory} of the trained members to use (inference/members.py MEMBERS,
    loaded in that order); ``neighbours_runs``: neighbour members, one per kind (members.py NEIGHBOURS and
    NEIGHBOUR_KINDS); ``blend_path``: a fitted blend for exactly these members; ``audio_run``: the audio
    member (members.py AUDIO; needs the blend's audio slots). Popularity (members.py POPULARITY) is always
    there."""

    def __init__(self, workdir: Path, runs: dict[str, Path], settings: Settings, neighbours_runs: list[Path] = (),
                 blend_path: Path | None = None, audio_run: Path | None = None):
        from data.title import TitleTokenizer

        self.workdir, self.settings = Path(workdir), settings
        self.manifest = verify_workdir(self.workdir, check_shards=False)
        vocab = json.loads((self.workdir / "vocab.json").read_text(encoding="utf-8"))
        self.index = index_of(vocab)
        self.song_ids = np.array([s for s, _ in vocab["songs"]], dtype=np.int64)
        self.tags = [t for t, _ in vocab["tags"]]
        self.song_counts = np.array([c for _, c in vocab["songs"]], dtype=np.float64)
        self.tag_counts = np.array([c for _, c in vocab["tags"]], dtype=np.float64)
        self.max_title_pieces = int(self.manifest["config"]["max_title_pieces"])
        with np.load(self.workdir / "release_dates.npz", allow_pickle=False) as f:
            self.release_dates = f["release_dates"]
        self.tokenizer = TitleTokenizer(self.workdir / "title.model")
        self.weak = {}  # member -> why popularity answers in its place (models/export.py below_popularity)
        context = registry.Context(self.workdir, self.manifest, self.index, self.tokenizer,
                                   {"songs": self.song_counts, "tags": self.tag_counts})
        self.popular = registry.POPULARITY.load(None, context)  # proposes, and stands in for a weak member
        self.models = self._load_members(runs, context)  # trained member name -> its loaded member (members.py)
        self.neighbours = self._load_neighbours(neighbours_runs, context)  # kind -> the neighbour member of that kind
        self.blend = None if blend_path is None else blend.load(blend_path, self.manifest, self.members(),
                                                                sorted(self.weak))
        self.audio = None  # the audio member (inference/audio_member.py), its tail slots from the blend file
        if audio_run is not None:
            self.audio = registry.AUDIO.load(Path(audio_run), context)
            if self.blend is not None:
                self.check_audio_slots(blend_path)

    def _load_members(self, runs: dict[str, Path], context: registry.Context) -> dict:
        """{name: loaded member} of the trained members given in ``runs``, in MEMBERS' order; each export
        checked against this work directory, and its strength against popularity (_check_strength)."""
        known = [m.name for m in registry.MEMBERS]
        unknown = sorted(set(runs) - set(known))
        if unknown:
            raise ValueError(f"no trained member called {', '.join(unknown)} "
                             f"(inference/members.py has {', '.join(known)})")
        loaded = {}
        for member in registry.MEMBERS:
            if runs.get(member.name) is not None:
                loaded[member.name] = member.load(Path(runs[member.name]), context)
                self._check_strength(member.name, runs[member.name], loaded[member.name].config)
        return loaded

    @staticmethod
    def _load_neighbours(neighbours_runs: list[Path], context: registry.Context) -> dict:
        """{kind: loaded neighbour member} of the neighbour runs (inference/members.py NEIGHBOURS), in the order
        given; ExportError for a second run of one kind or a kind the registry does not declare."""
        kinds = [k.name for k in registry.NEIGHBOUR_KINDS]
        loaded = {}
        for run in neighbours_runs:
            member = registry.NEIGHBOURS.load(Path(run), context)
            kind = member.config["kind"]
            if kind not in kinds:
                raise ExportError(f"{run}: no neighbour kind called {kind} (inference/members.py has "
                                  f"{', '.join(kinds)})")
            if kind in loaded:
                raise ExportError(f"{run}: a second {kind} neighbour member; give each kind once")
            loaded[kind] = member
        return loaded

    def _check_strength(self, name: str, run: Path, config: dict) -> None:
        """With settings.popularity_fallback, a model whose export scored below popularity on its validation
        questions is marked weak: popularity proposes in its place (``candidates``), and a warning says so."""
        weak = below_popularity(config) if self.settings.popularity_fallback else None
        if weak:
            self.weak[name] = weak
            log.warning("%s (%s): %s; popularity answers in its place (the ensemble config's popularity_fallback)",
                        name, run, weak)

    def check_audio_slots(self, blend_path: Path) -> None:
        """BlendError unless the blend file's audio slots were fitted for this audio member's CNN export."""
        if self.blend is None or self.blend["audio"] is None:
            raise BlendError(f"{blend_path}: no audio slots; fit the blend with --audio RUNDIR (python -m "
                             f"inference.fit_blend)")
        if self.blend["audio"]["weights_sha256"] != self.audio.weights_sha256:
            raise BlendError(f"{blend_path}: its audio slots were fitted with another CNN export; fit the blend "
                             f"again with this --audio run")

    def members(self) -> list[str]:
        """The members a fitted blend weighs: the loaded trained members (MEMBERS' order), the neighbour members
        by kind, then popularity."""
        return list(self.models) + list(self.neighbours) + [registry.POPULARITY.name]

    @functools.cached_property
    def artists(self) -> np.ndarray:
        """[n_songs, A] the vocabulary songs' artists (inference/ranker.py's artists_table), for the ranker's
        artist share; built on first use."""
        return artists_table(self.index["song_artists"])

    def given_songs(self, questions: list[dict]) -> list[list[int]]:
        """Each question's given songs that are in the vocabulary, as vocabulary indices."""
        songs = self.index["songs"]
        return [[songs[s] for s in q["songs"] if s in songs] for q in questions]

    # -------------------------------------------------------------- questions
    def release_by_song(self, questions: list[dict]) -> np.ndarray:
        """Release dates of the vocabulary songs, corrected with the questions' own update dates too."""
        dates = self.release_dates.copy()
        for q in questions:
            day = updt_day(q["updt_date"])
            for s in q["songs"]:
                if 0 <= s < len(dates) and (dates[s] == 0 or dates[s] > day):
                    dates[s] = day
        return dates[self.song_ids]

    def encode(self, questions: list[dict]) -> list[dict]:
        """Questions as vocabulary indices and title pieces; unknown items are dropped and counted."""
        unknown_songs = sum(1 for q in questions for s in q["songs"] if not 0 <= s < len(self.release_dates))
        out_of_vocab = sum(1 for q in questions for s in q["songs"] if s not in self.index["songs"])
        unknown_tags = sum(1 for q in questions for t in q["tags"] if t not in self.index["tags"])
        if unknown_songs:
            log.warning("%d given song ids are not in this work directory's song_meta.json: ignored", unknown_songs)
        log.info("%d given songs and %d given tags are outside the model vocabularies: used for filtering only",
                 out_of_vocab, unknown_tags)
        return [to_record(q, self.index, self.tokenizer, self.max_title_pieces) for q in questions]

    # -------------------------------------------------------------- members
    @staticmethod
    def _sum_rank_fill(candidates: np.ndarray, scores: np.ndarray, blocked: np.ndarray, n: int,
              bonus: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per row: candidates (-1 = none; an item proposed twice has its scores summed, plus its ``bonus``
        [rows, cols] once, when given) best first, then unblocked items in vocabulary (= popularity) order; -1
        where a row has fewer than n unblocked items. Returns (indices [rows, n], scores [rows, n]; 0 for the
        popularity fill)."""
        order = np.argsort(candidates, axis=1, kind="stable")
        items, values = np.take_along_axis(candidates, order, axis=1), np.take_along_axis(scores, order, axis=1)
        # the runs of one item (one entry per member that proposed it): their sum, kept at the run's first entry
        first = np.ones(items.shape, dtype=bool)
        first[:, 1:] = items[:, 1:] != items[:, :-1]
        run = np.cumsum(first, axis=1) - 1 + np.arange(items.shape[0])[:, None] * items.shape[1]
        sums = np.zeros(items.size)
        np.add.at(sums, run.ravel(), values.ravel())
        values = np.where(first, sums[run], 0.0)
        if bonus is not None:
            values = values + np.where(first, np.take_along_axis(bonus, order, axis=1), 0.0)
        items = np.where(first, items, -1)
        key = np.where(items >= 0, values, -np.inf)
        best = top_rows(key, n)
        chosen = np.take_along_axis(items, best, axis=1)
        chosen_scores = np.take_along_axis(key, best, axis=1)
        chosen[~np.isfinite(chosen_scores)] = -1
        chosen_scores[chosen < 0] = 0.0
        if chosen.shape[1] < n:  # fewer candidate slots than wanted (a small candidate setting)
            short = n - chosen.shape[1]
            chosen = np.pad(chosen, ((0, 0), (0, short)), constant_values=-1)
            chosen_scores = np.pad(chosen_scores, ((0, 0), (0, short)))
        for row in np.flatnonzero((chosen < 0).any(axis=1)):  # fill with the most popular unblocked items
            taken = set(chosen[row][chosen[row] >= 0].tolist())
            fill = [c for c in np.flatnonzero(~blocked[row])[: n + len(taken)].tolist() if c not in taken]
            have = len(taken)
            for c in fill[: n - have]:
                chosen[row, have] = c
                have += 1
        return chosen, chosen_scores

    def blocked(self, rs: list[dict], days: np.ndarray, release: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What each question may not get: songs [Q, n_songs] it holds or released after its update day
        (``release``: release_by_song), and tags [Q, n_tags] it holds."""
        blocked_songs = release[None, :] > days[:, None]
        blocked_tags = np.zeros((len(rs), len(self.tags)), dtype=bool)
        for i, r in enumerate(rs):
            blocked_songs[i, r["songs"]] = True
            blocked_tags[i, r["tags"]] = True
        return blocked_songs, blocked_tags

    # -------------------------------------------------------------- recommendations
    def candidates(self, qs: list[dict], rs: list[dict], blocked_songs: np.ndarray, blocked_tags: np.ndarray,
                   popular: bool) -> dict[str, Candidates]:
        """Every member's proposals for one batch of questions (``rs``: their records), by member name;
        ``popular``: popularity as a member too (a fitted blend weighs it)."""
        s = self.settings
        given = np.array([len(q["songs"]) + len(q["tags"]) > 0 for q in qs])
        has_title = np.array([bool(r["title"]) for r in rs])
        out = {}
        for name, member in self.models.items():
            runs, probabilities = member.answers(given, has_title), member.probabilities
            if name in self.weak:  # where it would answer, popularity answers in its place
                probabilities = self.popular.probabilities
            c = Candidates(np.full((len(qs), s.candidate_songs), -1), np.zeros((len(qs), s.candidate_songs)),
                           np.full((len(qs), s.candidate_tags), -1), np.zeros((len(qs), s.candidate_tags)))
            rows = np.flatnonzero(runs)
            if len(rows):
                p_songs, p_tags = probabilities([rs[i] for i in rows])
                top, values = registry.propose(p_songs, blocked_songs[rows], s.candidate_songs)
                c.song_items[rows, :top.shape[1]], c.song_scores[rows, :top.shape[1]] = top, values
                top, values = registry.propose(p_tags, blocked_tags[rows], s.candidate_tags)
                c.tag_items[rows, :top.shape[1]], c.tag_scores[rows, :top.shape[1]] = top, values
            out[name] = c
        for kind, member in self.neighbours.items():
            out[kind] = member.candidates(rs, blocked_songs, blocked_tags, s.candidate_songs, s.candidate_tags)
        if popular:
            out[registry.POPULARITY.name] = self.popular.candidates(blocked_songs, blocked_tags)
        return out

    def _weights(self, qs: list[dict], members: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per member, the (song, tag) weight of each question: the fitted blend's for its type, or the
        reference design's formula."""
        if self.blend is None:
            n = np.array([len(q["songs"]) + len(q["tags"]) for q in qs], dtype=np.float64)
            dae_songs, title_songs, dae_tags, title_tags = blend_weights(
                n, self.settings.title_weight, self.settings.title_tag_weight)
            if "title" not in self.models:  # the DAE alone: its own scores rank, a title-only question's too (n = 0)
                dae_songs = np.ones_like(n)
            ones = np.ones(len(qs))  # any other member (the neighbours without a blend file): its own scores
            return {"dae": (dae_songs, dae_tags), "title": (title_songs, title_tags),
                    **{m: (ones, ones) for m in members if m not in ("dae", "title")}}
        types = [question_type(q) for q in qs]
        fitted = self.blend["weights"]
        return {m: (np.array([fitted[t][m][0] for t in types]), np.array([fitted[t][m][1] for t in types]))
                for m in members}

    def batches(self, questions: list[dict], popular: bool, progress: bool = False):
        """Per batch of questions: (the questions, their update days, the vocabulary songs' release days
        (release_by_song, the same for every batch), blocked songs, blocked tags, every member's Candidates by
        name; see ``blocked`` and ``candidates``)."""
        from tqdm import tqdm

        release = self.release_by_song(questions)
        records = self.encode(questions)
        size = self.settings.batch_size
        for start in tqdm(range(0, len(questions), size), desc="ensemble", unit="batch", disable=not progress):
            qs, rs = questions[start:start + size], records[start:start + size]
            days = np.array([updt_day(q["updt_date"]) for q in qs])
            blocked_songs, blocked_tags = self.blocked(rs, days, release)
            yield qs, days, release, blocked_songs, blocked_tags, self.candidates(qs, rs, blocked_songs, blocked_tags,
                                                                                  popular)

    def recommend(self, questions: list[dict], progress: bool = True, scores: bool = False) -> list[dict]:
        """Results in the official format (``scores=True`` adds ``song_scores``/``tag_scores`` for display)."""
        results, used = [], {}
        for qs, days, release, blocked_songs, blocked_tags, proposals in self.batches(
                questions, self.blend is not None, progress):
            for name, c in proposals.items():
                used[name] = used.get(name, 0) + int((c.song_items[:, 0] >= 0).sum())
            chosen = {}
            for kind, blocked, n in (("songs", blocked_songs, SONGS_PER_PLAYLIST), ("tags", blocked_tags, TAGS_PER_PLAYLIST)):
                items, values, bonus = self._scored(kind, qs, proposals, days, release)
                chosen[kind] = self._sum_rank_fill(items, values, blocked, n, bonus)
            tails = self._audio_tails(qs, days)
            for i, q in enumerate(qs):
                (songs, song_scores), (tags, tag_scores) = chosen["songs"], chosen["tags"]
                result = {"id": q["id"], "songs": self._song_ids(songs[i], q, days[i]), "tags": self._tags(tags[i], q)}
                if tails is not None:
                    result["songs"] = with_tail(result["songs"], *tails[i])
                    used[registry.AUDIO.name] = used.get(registry.AUDIO.name, 0) + int(bool(tails[i][0]))
                if scores:  # a song the blend did not score (the audio member's, the rare fill) shows 0
                    scored = dict(zip(self.song_ids[songs[i][songs[i] >= 0]].tolist(), song_scores[i][songs[i] >= 0].tolist()))
                    result["song_scores"] = [scored.get(s, 0.0) for s in result["songs"]]
                    result["tag_scores"] = tag_scores[i][tags[i] >= 0].tolist()
                results.append(result)
        method = "the reference design's" if self.blend is None else self.blend["method"] + ", fitted per question type"
        log.info("questions: %d; members that proposed: %s; blend: %s", len(questions),
                 ", ".join(f"{m} {k}" for m, k in used.items()), method)
        return results

    def _audio_tails(self, qs: list[dict], days: np.ndarray) -> list[tuple[list[int], int]] | None:
        """Per question, (the audio member's proposals, the tail slots of its type) for with_tail; None without
        the audio member or fitted slots."""
        if self.audio is None or self.blend is None or self.blend["audio"] is None:
            return None
        slots = [self.blend["audio"]["slots"][question_type(q)] for q in qs]
        proposed = self.audio.propose(qs, self.index["tags"], days, self.release_dates, max(slots, default=0))
        return [(p[:m], m) for p, m in zip(proposed, slots)]

    def _scored(self, kind: str, qs: list[dict], proposals: dict[str, Candidates], days: np.ndarray,
                release: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One kind's candidates of every member side by side, for _sum_rank_fill: items [Q, C] (a last column of -1),
        each entry's blended score [Q, C] and the per-item bonus [Q, C] (the ranker's item term; None for
        the other blends)."""
        k = 0 if kind == "songs" else 1
        items = np.concatenate([c.kind(kind)[0] for c in proposals.values()] + [np.full((len(qs), 1), -1)], axis=1)
        if self.blend is None or self.blend["method"] == "grid":
            weights = self._weights(qs, list(proposals))
            power = None if self.blend is None else self.blend["power"][kind]  # a fitted blend normalises
            values = [(c.kind(kind)[1] if power is None else normalised(c.kind(kind)[1], power)) * weights[m][k][:, None]
                      for m, c in proposals.items()]
            return items, np.concatenate(values + [np.zeros((len(qs), 1))], axis=1), None
        if kind == "songs":
            rows = np.broadcast_to(np.arange(len(qs))[:, None], items.shape)
            features = ranker.item_features(items, self.song_counts, ranker.ages(items, days, release),
                                            ranker.artist_shares(rows, items, self.given_songs(qs), self.artists))
        else:
            features = ranker.item_features(items, self.tag_counts, None, None)
        values, bonus = ranker.blended(self.blend["ranker"]["weights"][kind], [question_type(q) for q in qs],
                                       {m: c.kind(kind) for m, c in proposals.items()}, features)
        return items, np.concatenate([values, np.zeros((len(qs), 1))], axis=1), bonus

    def _song_ids(self, indices: np.ndarray, question: dict, day: int) -> list[int]:
        """Song ids; on the rare question whose date leaves fewer than 100 vocabulary songs, the oldest
        songs outside the vocabulary complete the list (never a given song)."""
        songs = self.song_ids[indices[indices >= 0]].tolist()
        if len(songs) < SONGS_PER_PLAYLIST:
            given, taken = set(question["songs"]), set(songs)
            order = np.argsort(self.release_dates, kind="stable")  # oldest first: released by any update date
            for s in order.tolist():
                if len(songs) == SONGS_PER_PLAYLIST:
                    break
                if s not in given and s not in taken and self.release_dates[s] <= day:
                    songs.append(s)
                    taken.add(s)
            if len(songs) < SONGS_PER_PLAYLIST:
                raise ValueError(f"question id {question['id']}: fewer than {SONGS_PER_PLAYLIST} songs released by "
                                 f"its update date exist in song_meta.json")
        return songs

    def _tags(self, indices: np.ndarray, question: dict) -> list[str]:
        tags = [self.tags[i] for i in indices[indices >= 0].tolist()]
        if len(tags) < TAGS_PER_PLAYLIST:
            raise ValueError(f"question id {question['id']}: the tag vocabulary holds fewer than "
                             f"{TAGS_PER_PLAYLIST} tags it does not already have")
        return tags
