"""A synthetic, Melon-shaped data set: the project's embedded default when the real files are absent.

    python -m data.synth --scale {tiny,small,melon} --seed N --out DIR [--force] [--mel played|all [--mel-frames F]]

writes ``train.json``, ``val.json``, ``test.json``, ``song_meta.json`` and ``genre_gn_all.json`` in the
official schema, plus ``answers/val.json`` and ``answers/test.json`` (what the questions hide; the real
data set does not publish these) and ``synth_info.json`` (scale, seed, sizes, generator parameters).
``val.json``/``test.json`` are question files masked with the real leaderboard mix (see data/split.py).

Generative story
----------------
The real data set's figures (``data.stats.REAL``; the real tag and genre tables are in data/reference/)
are matched on their marginals; latent *themes* (taste clusters) make it learnable.

1. **Themes.** ``K ≈ playlists / 600`` themes, each with a popularity (log-normal), a profile over the
   30 real major genres (concentrated on 1-3), an era (most recent, some 1965-2013), a *cluster* of
   related themes (those of the same primary genre), preferences over the frequent tags (genre-named
   tags such as "발라드" or "힙합" favour themes of that genre), its own rarer tags and title keywords.
2. **Artists, albums, songs.** ``songs / 6.6`` artists, each in one theme with a log-normal popularity and
   1-2 major genres from the theme's profile; albums of ~2.6 songs share an issue date after the
   artist's debut; 8% of songs feature a second artist of the same theme. Each song gets 1 (86.7%),
   2 (13.1%) or 3 (0.2%) major genres and one detailed code under each. Songs come in three kinds:
   *catalogue* songs with a heavy-tailed weight (artist popularity x song factor), *single-use* songs that
   are dealt out exactly once to a playlist of their theme (the real data has far more one-off songs
   than any weighted sampling gives: 48.6% of train songs occur once while 87% of the catalogue occurs),
   and *unplayed* songs that no playlist holds.
3. **Playlists.** Each picks a theme (by popularity), a secondary theme (usually of the same cluster) and
   1-4 favourite artists of its theme. Its length follows the real quantiles (median 30, mean ~46, max
   200) and its slots are split between favourite artists, its theme, the secondary theme, global hits
   and single-use songs; each part is drawn without replacement by weight. Tags (1-11, mean ~4.1) come
   from the 29,160 real tags at their real frequencies: the frequent half of all entries is shared by
   every theme with per-theme preferences, rarer tags belong to one theme, and the real one-off tags
   (59.8% of the vocabulary, 3.7% of entries) are each dealt out once. Titles mix the
   playlist's tags, theme keywords, generic words and suffixes, in Korean and English, with a few
   emoji-only titles. ``updt_date`` is the later of a user-activity date (2005-2020, mostly recent) and
   the newest song it holds plus a random lag (so songs are almost always issued before it); a few re-released albums and ``00000000``/``YYYY0000`` issue dates reproduce
   the real quirks. ``like_cnt`` is heavy-tailed.
4. **Files.** Playlists are shuffled and cut into train/val/test with the real proportions; val and test
   are masked into questions with the leaderboard mix.
5. **Audio** (``--mel played|all``, off by default): a mel-spectrogram per song in the real
   ``arena_mel_*.tar`` layout, made from its genres (a spectral envelope), theme (envelope and tempo),
   artist (timbre) and noise, ``--mel-frames`` frames long (default 112; data/synth_audio.py): ``played``
   for the songs of some playlist, ``all`` for every song of song_meta.json (the main job's, as the real
   files have). ``small`` with ``--mel all`` adds 123,053 songs, 1.4 GB in 30 s with the rest of the set
   (measured; ``--mel played``: 117,405 songs, 1.54 GB at 128 frames).

Noise (secondary themes, global hits, single-use songs, global tags) keeps a popularity baseline low
while co-occurrence models can score far higher. Everything is seeded: the same scale and seed give
byte-identical files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import yaml

from data.melon import write_json
from data.split import LEADERBOARD_MIX, mask_questions
from data.synth_audio import write_synthetic_mel

log = logging.getLogger("data.synth")

REFERENCE_DATA = Path(__file__).resolve().parent / "reference"  # the real genre and tag tables
REAL_TRAIN, REAL_VAL, REAL_TEST, REAL_SONGS = 115_071, 23_015, 10_740, 707_989

SCALES = {  # train playlists; val/test/songs keep the real proportions
    "tiny": 2_000,
    "small": 20_000,
    "melon": REAL_TRAIN,
}

# Real songs-per-playlist quantiles (min 1, p25 19, median 30, p75 54, max 200), with upper knots chosen
# so the mean is ~45.9; interpolated log-linearly between knots.
LENGTH_KNOTS = np.array([[0.0, 1], [0.05, 6], [0.25, 19], [0.5, 30], [0.75, 54], [0.9, 104], [0.96, 168], [0.985, 200], [1.0, 200]])
# Tags per playlist 1..11: p25 2, median 3, p75 6, mean ~4.13.
TAG_COUNT_P = np.array([0.15, 0.17, 0.19, 0.11, 0.10, 0.09, 0.06, 0.05, 0.04, 0.03, 0.01])
# Share of songs with 1, 2 or 3 major genres.
GENRES_PER_SONG_P = np.array([0.867, 0.131, 0.002])
# Major-genre popularity (POP largest); the rest decay.
BIG_GENRES = ["GN0900", "GN0100", "GN0200", "GN0300", "GN0500", "GN0400", "GN1500", "GN0600", "GN1100", "GN1200", "GN1700", "GN1800"]
GENRE_TAGS = {
    "발라드": "GN0100", "댄스": "GN0200", "힙합": "GN0300", "랩": "GN0300", "알앤비": "GN0400", "R&B": "GN0400",
    "소울": "GN0400", "인디": "GN0500", "락": "GN0600", "록": "GN0600", "트로트": "GN0700", "포크": "GN0800",
    "팝": "GN0900", "Pop": "GN0900", "팝송": "GN0900", "일렉": "GN1100", "OST": "GN1500", "클래식": "GN1600",
    "재즈": "GN1700", "뉴에이지": "GN1800", "피아노": "GN1800", "제이팝": "GN1900", "CCM": "GN2100",
    "동요": "GN2200", "태교": "GN2200", "국악": "GN2400", "아이돌": "GN2500", "EDM": "GN2700", "뮤지컬": "GN2900",
    "크리스마스": "GN3000", "캐롤": "GN3000",
}
TITLE_WORDS_KO = ["새벽", "퇴근길", "출근길", "드라이브", "카페", "비 오는 날", "여름밤", "겨울", "봄날", "운동", "공부",
                  "잠들기 전", "산책", "여행", "주말", "혼자", "감성", "추억", "설렘", "이별", "힐링", "집중", "기분전환"]
TITLE_WORDS_EN = ["chill", "vibes", "mood", "lofi", "night", "drive", "coffee", "summer", "oldies", "groove",
                  "love", "rainy day", "workout", "study", "sunday", "city", "dreamy", "acoustic"]
TITLE_SUFFIXES = ["", "", "", " 노래", " 플레이리스트", " 모음", " BGM", " 음악", " 명곡", " 추천", " 듣기 좋은 노래",
                  " 할 때 듣는 노래", " playlist", " songs", " mix", " 모음집", " 베스트"]
TITLE_WORDS = TITLE_WORDS_KO + TITLE_WORDS_EN
GENERIC_TITLES = ["내가 좋아하는 노래", "my playlist", "좋은 노래", "노래 모음", "플레이리스트", "최애곡"]
EMOJI_TITLES = ["♡", "♥♥", "🎧", "🌙✨", "☕", "...", "♬♪", "💕", "🔥🔥"]
HANGUL = list("가나다라마바사아자차카타파하고노도로모보소오조초코토포호구누두루무부수우주추쿠투푸후기니디리미비시이지치"
              "키티피히민서준하윤지우현진태영수연은빛별달솔결슬봄온새한")
LATIN = "abcdefghijklmnopqrstuvwxyz"
FIRST_DATE, LAST_DATE = dt.date(2005, 1, 1), dt.date(2020, 4, 23)  # the real train.json's updt_date range


DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "synth.yaml"


@dataclass(frozen=True)
class Mix:
    """Generator knobs; values and their meaning live in configs/synth.yaml."""

    playlists_per_theme: int
    min_themes: int
    songs_per_artist: float
    songs_per_album: float
    single_use_share: float
    unplayed_share: float
    artist_sigma: float
    song_sigma: float
    hit_chart_size: int
    hit_offset: float
    slot_shares: tuple
    same_cluster_secondary: float
    tag_head_mass: float
    tag_affinity_sigma: float

    @classmethod
    def load(cls, path: Path = DEFAULT_CONFIG) -> "Mix":
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        names = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) != names:
            got = set(values) if isinstance(values, dict) else set()
            raise ValueError(f"{path}: expected exactly the keys {sorted(names)}; "
                             f"missing {sorted(names - got)}, unknown {sorted(got - names)}")
        values["slot_shares"] = tuple(values["slot_shares"])
        if len(values["slot_shares"]) != 5:
            raise ValueError(f"{path}: slot_shares needs 5 shares (favourites, theme, secondary, hits, single-use)")
        return cls(**values)


def scale_sizes(scale: str) -> dict[str, int]:
    n_train = SCALES[scale]
    return {
        "train": n_train,
        "val": round(n_train * REAL_VAL / REAL_TRAIN),
        "test": round(n_train * REAL_TEST / REAL_TRAIN),
        "songs": round(n_train * REAL_SONGS / REAL_TRAIN),
    }


def _cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights, dtype=np.float64)
    return c / c[-1]


def _draw_unique(rng: np.random.Generator, ids: np.ndarray, cdf: np.ndarray, k: int, taken: set) -> list[int]:
    """Up to ``k`` distinct ids (not in ``taken``) drawn by weight without replacement; updates ``taken``."""
    out: list[int] = []
    if k <= 0 or len(ids) == 0:
        return out
    for _ in range(4):
        picks = ids[np.minimum(np.searchsorted(cdf, rng.random(2 * (k - len(out)) + 8), side="right"), len(ids) - 1)]
        for s in picks.tolist():
            if s not in taken:
                taken.add(s)
                out.append(s)
                if len(out) == k:
                    return out
    return out


def _names(rng: np.random.Generator, n: int, korean_share: float) -> list[str]:
    """``n`` pseudo names: 2-4 Hangul syllables, or 1-2 capitalised Latin words of 3-7 letters."""
    korean = rng.random(n) < korean_share
    syllables = rng.integers(0, len(HANGUL), (n, 4))
    n_syllables = rng.integers(2, 5, n)
    letters = rng.integers(0, 26, (n, 14))
    word_len = rng.integers(3, 8, (n, 2))
    two_words = rng.random(n) < 0.4
    out = []
    for i in range(n):
        if korean[i]:
            out.append("".join(HANGUL[j] for j in syllables[i, : n_syllables[i]]))
        else:
            first = "".join(LATIN[j] for j in letters[i, : word_len[i, 0]]).capitalize()
            if two_words[i]:
                first += " " + "".join(LATIN[j] for j in letters[i, 7: 7 + word_len[i, 1]]).capitalize()
            out.append(first)
    return out


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _date_str(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(np.datetime64("1970-01-01") + days.astype("timedelta64[D]"), unit="D")


class Generator:
    def __init__(self, scale: str, seed: int, mix: Mix | None = None, reference_dir: Path = REFERENCE_DATA):
        self.sizes = scale_sizes(scale)
        self.scale, self.seed, self.mix = scale, seed, mix or Mix.load()
        self.rng = np.random.default_rng(seed)
        self.genres = json.loads((reference_dir / "genre_gn_all.json").read_text(encoding="utf-8"))
        tag_counts = json.loads((reference_dir / "melon_train_tag_counts.json").read_text(encoding="utf-8"))
        self.tags = np.array(list(tag_counts.keys()))
        self.tag_counts = np.array(list(tag_counts.values()), dtype=np.float64)
        self.n_playlists = self.sizes["train"] + self.sizes["val"] + self.sizes["test"]

    # ------------------------------------------------------------------ themes
    def _themes(self) -> None:
        rng, mix = self.rng, self.mix
        self.majors = sorted(c for c in self.genres if c.endswith("00"))
        self.children = {m: [c for c in self.genres if c[:4] == m[:4] and c != m and not c.endswith("01")] or
                         [c for c in self.genres if c[:4] == m[:4] and c != m] for m in self.majors}
        order = BIG_GENRES + [m for m in self.majors if m not in BIG_GENRES]
        genre_pop = np.zeros(len(self.majors))
        for rank, code in enumerate(order):
            genre_pop[self.majors.index(code)] = 1.0 / (rank + 2) ** 1.6
        genre_pop /= genre_pop.sum()

        K = max(mix.min_themes, round(self.n_playlists / mix.playlists_per_theme))
        self.K = K
        self.theme_pop = rng.lognormal(0, 0.5, K)
        self.theme_pop /= self.theme_pop.sum()
        self.theme_primary = rng.choice(len(self.majors), size=K, p=genre_pop)
        self.theme_cluster = self.theme_primary  # related themes share their primary genre
        self.theme_genres = np.zeros((K, len(self.majors)))
        for k in range(K):
            profile = rng.dirichlet(np.full(len(self.majors), 0.1)) * 0.04 + genre_pop * 0.1
            profile[self.theme_primary[k]] += 0.86
            self.theme_genres[k] = profile / profile.sum()
        era = np.where(rng.random(K) < 0.75, rng.uniform(2013, 2018.5, K), rng.uniform(1965, 2013, K))
        self.theme_era = era

        # Tags keep the real frequencies. The head (the most frequent tags, half of all entries) is shared by
        # all themes with a log-normal affinity per theme (genre-named tags strongly favour themes of
        # their genre); every rarer tag has one home theme. A draw comes from the head with probability
        # equal to its mass, else from the home tags, so each tag's expected frequency stays ~ its real count.
        order = np.argsort(-self.tag_counts, kind="stable")
        head_size = int(np.searchsorted(np.cumsum(self.tag_counts[order]) / self.tag_counts.sum(), mix.tag_head_mass)) + 1
        head, tail = order[:head_size], order[head_size:]
        # Tags carried by one real playlist are one-off inventions: each is dealt out once, at the real rate.
        self.one_off_share = float((self.tag_counts == 1).sum() / self.tag_counts.sum())
        self.one_off_tags = list(rng.permutation(tail[self.tag_counts[tail] == 1]))
        tail = tail[self.tag_counts[tail] > 1]
        affinity = rng.lognormal(0, mix.tag_affinity_sigma, (K, head_size))
        for j, t in enumerate(head):
            code = GENRE_TAGS.get(str(self.tags[t]))
            if code is not None:
                affinity[:, j] *= np.where(self.theme_primary == self.majors.index(code), 20.0, 0.3)
        self.head_tag_ids = head
        self.global_tag_cdf = _cdf(self.tag_counts)  # title words: any real tag by frequency
        self.theme_head_cdf = [_cdf(self.tag_counts[head] * affinity[k]) for k in range(K)]
        home = rng.choice(K, size=len(tail), p=self.theme_pop)
        self.theme_tag_ids, self.theme_tag_cdf = [], []
        for k in range(K):
            ids = tail[home == k]
            if len(ids) == 0:
                ids = tail[:1]
            self.theme_tag_ids.append(ids)
            self.theme_tag_cdf.append(_cdf(self.tag_counts[ids]))
        self.theme_words = []
        for k in range(K):
            favoured_head = self.head_tag_ids[np.argsort(-np.diff(self.theme_head_cdf[k], prepend=0.0))[:5]]
            top_tags = [str(t) for t in self.tags[np.concatenate([favoured_head, self.theme_tag_ids[k][:5]])]]
            words = list(rng.choice(TITLE_WORDS_KO, 2, replace=False)) + list(rng.choice(TITLE_WORDS_EN, 1))
            self.theme_words.append(top_tags + words)

    # ------------------------------------------------------------------ catalogue
    def _catalogue(self) -> None:
        rng, mix = self.rng, self.mix
        n_songs = self.sizes["songs"]
        n_artists = max(self.K * 4, round(n_songs / mix.songs_per_artist))
        artist_theme = rng.choice(self.K, size=n_artists, p=self.theme_pop)
        artist_pop = rng.lognormal(0, mix.artist_sigma, n_artists)
        artist_major = np.empty(n_artists, dtype=np.int64)
        for k in range(self.K):
            members = np.flatnonzero(artist_theme == k)
            artist_major[members] = rng.choice(len(self.majors), size=len(members), p=self.theme_genres[k])
        artist_debut = np.clip(self.theme_era[artist_theme] + rng.normal(0, 3, n_artists), 1955, 2019.8)

        # Songs per artist ~ artist popularity (popular artists release more), at least one each.
        share = artist_pop ** 0.5
        counts = 1 + rng.multinomial(n_songs - n_artists, share / share.sum())
        song_artist = np.repeat(np.arange(n_artists), counts)
        rng.shuffle(song_artist)  # song ids are not grouped by artist
        order = np.argsort(song_artist, kind="stable")

        # Albums: consecutive songs of an artist, ~songs_per_album each.
        album_of = np.empty(n_songs, dtype=np.int64)
        album_date = []
        album_id = 0
        pos = 0
        for a, c in enumerate(counts):
            left = c
            while left > 0:
                size = min(left, int(rng.geometric(1 / mix.songs_per_album)))
                album_of[order[pos:pos + size]] = album_id
                year = artist_debut[a] + rng.exponential(2.0)
                if year > 2020.28:  # no pile-up at the end: a release somewhere in the career
                    year = rng.uniform(artist_debut[a], 2020.28)
                album_date.append(year)
                album_id += 1
                pos += size
                left -= size
        n_albums = album_id
        album_year = np.array(album_date)
        album_days = ((album_year - 1970) * 365.25).astype(np.int64)
        album_days = np.minimum(album_days, (LAST_DATE - dt.date(1970, 1, 1)).days - 10)
        self.album_days = album_days

        self.song_artist = song_artist
        self.song_theme = artist_theme[song_artist]
        self.song_album = album_of
        self.n_albums = n_albums
        weight = artist_pop[song_artist] * rng.lognormal(0, mix.song_sigma, n_songs)
        kind = rng.choice(3, size=n_songs, p=[1 - mix.single_use_share - mix.unplayed_share,
                                              mix.single_use_share, mix.unplayed_share])
        self.song_kind = kind  # 0 catalogue, 1 single-use, 2 unplayed
        weight[kind != 0] = 0.0
        self.song_weight = weight

        # Featured second/third artists from the same theme.
        theme_artists = [np.flatnonzero(artist_theme == k) for k in range(self.K)]
        n_feat = rng.choice(3, size=n_songs, p=[0.91, 0.08, 0.01])
        self.song_artists = []
        for s in range(n_songs):
            main = int(song_artist[s])
            extra = set()
            if n_feat[s]:
                pool = theme_artists[self.song_theme[s]]
                extra = {int(pool[j]) for j in rng.integers(0, len(pool), n_feat[s])} - {main}
            self.song_artists.append([main] + sorted(extra))

        # Genres: the artist's major, sometimes 1-2 more from the theme profile.
        n_major = rng.choice(3, size=n_songs, p=GENRES_PER_SONG_P) + 1
        self.song_majors = []
        for s in range(n_songs):
            majors = [int(artist_major[song_artist[s]])]
            if n_major[s] > 1:
                profile = self.theme_genres[self.song_theme[s]] + 1e-4
                profile[majors[0]] = 0.0
                extra = rng.choice(len(self.majors), size=n_major[s] - 1, replace=False, p=profile / profile.sum())
                majors += [int(g) for g in extra]
            self.song_majors.append(majors)

        self.artist_names = _names(rng, n_artists, korean_share=0.6)
        self.theme_artists = theme_artists

        # Sampling tables: per theme, per artist, global hits (catalogue songs only).
        playable = kind == 0
        self.theme_song_ids, self.theme_song_cdf = [], []
        for k in range(self.K):
            ids = np.flatnonzero(playable & (self.song_theme == k))
            if len(ids) == 0:
                ids = np.flatnonzero(playable)[:1]
            self.theme_song_ids.append(ids)
            self.theme_song_cdf.append(_cdf(weight[ids]))
        by_artist = np.argsort(song_artist, kind="stable")
        self.artist_song_start = np.concatenate([[0], np.cumsum(counts)])
        self.artist_song_ids = by_artist
        self.catalogue_ids = np.flatnonzero(playable)
        self.catalogue_cdf = _cdf(weight[self.catalogue_ids])
        hit_ids = np.argsort(-weight, kind="stable")[: min(mix.hit_chart_size, int(playable.sum()))]
        self.hit_ids, self.hit_cdf = hit_ids, _cdf(1.0 / (np.arange(len(hit_ids)) + mix.hit_offset))
        self.single_use = [list(rng.permutation(np.flatnonzero((kind == 1) & (self.song_theme == k)))) for k in range(self.K)]
        self.artist_pop = artist_pop
        self.artist_theme = artist_theme

    # ------------------------------------------------------------------ playlists
    def _length(self, n: int) -> np.ndarray:
        u = self.rng.random(n)
        logs = np.interp(u, LENGTH_KNOTS[:, 0], np.log(LENGTH_KNOTS[:, 1]))
        return np.clip(np.rint(np.exp(logs)), 1, 200).astype(int)

    def _title(self, k: int, tags: list[str]) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.003:
            return _pick(rng, EMOJI_TITLES)
        if r < 0.007:  # generic titles shared by many playlists
            return _pick(rng, GENERIC_TITLES)
        words = []
        for _ in range(_pick(rng, (2, 3, 3, 3, 4, 4, 5))):
            source = rng.random()
            if source < 0.3 and tags:
                words.append(_pick(rng, tags))
            elif source < 0.6:
                words.append(_pick(rng, self.theme_words[k]))
            elif source < 0.85:  # any real tag, by frequency: titles rarely repeat exactly
                words.append(str(self.tags[np.searchsorted(self.global_tag_cdf, rng.random())]))
            else:
                words.append(_pick(rng, TITLE_WORDS))
        words = list(dict.fromkeys(words))
        title = " ".join(words) + _pick(rng, TITLE_SUFFIXES)
        if rng.random() < 0.25:
            title = f"{title} {_pick(rng, ('vol.', 'pt.', '#', ''))}{rng.integers(1, 30)}"
        if rng.random() < 0.1:
            title = title + " " + _pick(rng, EMOJI_TITLES)
        return title

    def _playlists(self) -> list[dict]:
        rng, mix = self.rng, self.mix
        n = self.n_playlists
        lengths = self._length(n)
        n_tags = rng.choice(np.arange(1, 12), size=n, p=TAG_COUNT_P / TAG_COUNT_P.sum())
        themes = rng.choice(self.K, size=n, p=self.theme_pop)
        shares = rng.dirichlet(np.array(mix.slot_shares) * 20, size=n)
        like = np.floor(rng.pareto(1.1, n) * rng.lognormal(0.5, 1.5, n)).astype(np.int64)
        like[rng.random(n) < 0.3] = 0
        song_days = self.album_days[self.song_album]
        clusters = [np.flatnonzero(self.theme_cluster == c) for c in range(self.theme_cluster.max() + 1)]
        theme_cdf = _cdf(self.theme_pop)
        theme_artist_cdf = [_cdf(self.artist_pop[a]) for a in self.theme_artists]
        last_day = (LAST_DATE - dt.date(1970, 1, 1)).days
        first_day = (FIRST_DATE - dt.date(1970, 1, 1)).days
        # when its user last edited it, skewed to recent years (Melon playlists date from 2005 on)
        activity = first_day + (last_day - first_day) * rng.beta(5.0, 1.0, n)

        playlists = []
        for i in range(n):
            k = int(themes[i])
            if rng.random() < mix.same_cluster_secondary and len(clusters[self.theme_cluster[k]]) > 1:
                k2 = int(_pick(rng, clusters[self.theme_cluster[k]]))
            else:
                k2 = int(np.searchsorted(theme_cdf, rng.random()))
            parts = rng.multinomial(lengths[i], shares[i])
            taken: set = set()
            songs: list[int] = []
            # favourite artists of the theme
            favs = _draw_unique(rng, self.theme_artists[k], theme_artist_cdf[k], 1 + rng.poisson(1.2), set())
            fav_ids = np.concatenate([self.artist_song_ids[self.artist_song_start[a]:self.artist_song_start[a + 1]] for a in favs])
            fav_ids = fav_ids[self.song_weight[fav_ids] > 0]
            if len(fav_ids):
                songs += _draw_unique(rng, fav_ids, _cdf(self.song_weight[fav_ids]), min(parts[0], len(fav_ids) // 2 + 1), taken)
            single = self.single_use[k]
            n_single = min(parts[4], len(single))
            for _ in range(n_single):
                s = int(single.pop())
                taken.add(s)
                songs.append(s)
            songs += _draw_unique(rng, self.hit_ids, self.hit_cdf, parts[3], taken)
            songs += _draw_unique(rng, self.theme_song_ids[k2], self.theme_song_cdf[k2], parts[2], taken)
            songs += _draw_unique(rng, self.theme_song_ids[k], self.theme_song_cdf[k], lengths[i] - len(songs), taken)
            if len(songs) < lengths[i]:  # a theme smaller than the playlist (tiny scale): any catalogue song
                songs += _draw_unique(rng, self.catalogue_ids, self.catalogue_cdf, lengths[i] - len(songs), taken)
            rng.shuffle(songs)

            tag_ids: set = set()  # indices into self.tags
            n_one_off = min(rng.binomial(n_tags[i], self.one_off_share), len(self.one_off_tags))
            tag_list = [int(self.one_off_tags.pop()) for _ in range(n_one_off)]
            tag_ids.update(tag_list)
            n_rest = n_tags[i] - n_one_off
            n_head = rng.binomial(n_rest, mix.tag_head_mass)
            tag_list += _draw_unique(rng, self.theme_tag_ids[k], self.theme_tag_cdf[k], n_rest - n_head, tag_ids)
            tag_list += _draw_unique(rng, self.head_tag_ids, self.theme_head_cdf[k], n_tags[i] - len(tag_list), tag_ids)
            tags = [str(self.tags[t]) for t in tag_list]

            newest = int(song_days[songs].max())
            day = min(max(newest + int(rng.exponential(250)) + 1, int(activity[i])), last_day)
            seconds = int(rng.integers(0, 86400))
            stamp = (dt.datetime(1970, 1, 1) + dt.timedelta(days=day, seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.000")
            playlists.append({
                "tags": tags, "id": 0, "plylst_title": self._title(k, tags), "songs": songs,
                "like_cnt": int(like[i]), "updt_date": stamp,
            })
        order = rng.permutation(n)
        playlists = [playlists[j] for j in order]
        for new_id, p in enumerate(playlists):
            p["id"] = new_id
        return playlists

    # ------------------------------------------------------------------ song_meta
    def _song_meta(self) -> list[dict]:
        rng = self.rng
        days = self.album_days.copy()
        # Real quirks, applied after playlist dates were fixed: a few albums re-released later
        # (their songs now look issued after playlists holding them) and unknown dates.
        reissued = rng.random(self.n_albums) < 0.002
        days[reissued] += rng.integers(100, 900, reissued.sum())
        days = np.minimum(days, (LAST_DATE - dt.date(1970, 1, 1)).days)
        date_str = np.char.replace(_date_str(days), "-", "")
        quirk = rng.random(self.n_albums)
        date_str = np.where(quirk < 0.004, "00000000", date_str)
        date_str = np.where((quirk >= 0.004) & (quirk < 0.012), np.char.add(np.char.ljust(date_str.astype("<U4"), 4), "0000"), date_str)
        date_str = np.where((quirk >= 0.012) & (quirk < 0.03), np.char.add(np.char.ljust(date_str.astype("<U6"), 6), "00"), date_str)
        album_names = _names(rng, self.n_albums, korean_share=0.5)
        song_names = _names(rng, len(self.song_artist), korean_share=0.55)
        child_u = rng.random((len(self.song_artist), 3))
        meta = []
        for s in range(len(self.song_artist)):
            majors = [self.majors[g] for g in self.song_majors[s]]
            details = [self.children[m][int(u * len(self.children[m]))] for m, u in zip(majors, child_u[s]) if self.children[m]]
            album = int(self.song_album[s])
            meta.append({
                "song_gn_dtl_gnr_basket": details,
                "issue_date": str(date_str[album]),
                "album_name": album_names[album],
                "album_id": album,
                "artist_id_basket": self.song_artists[s],
                "song_name": song_names[s],
                "song_gn_gnr_basket": majors,
                "artist_name_basket": [self.artist_names[a] for a in self.song_artists[s]],
                "id": s,
            })
        return meta

    def generate(self) -> dict:
        t0 = time.perf_counter()
        self._themes()
        self._catalogue()
        log.info("catalogue: %d themes, %d songs, %d albums (%.1fs)", self.K, len(self.song_artist), self.n_albums, time.perf_counter() - t0)
        playlists = self._playlists()
        log.info("playlists: %d (%.1fs)", len(playlists), time.perf_counter() - t0)
        song_meta = self._song_meta()
        n_train, n_val = self.sizes["train"], self.sizes["val"]
        train, val_full, test_full = playlists[:n_train], playlists[n_train:n_train + n_val], playlists[n_train + n_val:]
        mask_rng = np.random.RandomState(self.seed)
        val_q, val_a = mask_questions(val_full, LEADERBOARD_MIX, mask_rng)
        test_q, test_a = mask_questions(test_full, LEADERBOARD_MIX, mask_rng)
        return {
            "train": train, "val": val_q, "test": test_q, "song_meta": song_meta, "genre_gn_all": self.genres,
            "answers/val": val_a, "answers/test": test_a,
        }


def write_dataset(files: dict, out: Path, info: dict) -> None:
    for name, obj in files.items():
        write_json(obj, out / f"{name}.json")
    write_json(info, out / "synth_info.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output folder (must be empty unless --force)")
    parser.add_argument("--force", action="store_true", help="overwrite the files of a non-empty --out")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="generator knobs (default configs/synth.yaml)")
    parser.add_argument("--mel", choices=("none", "played", "all"), default="none",
                        help="also write mel-spectrograms (arena_mel_*.tar) for the songs of some playlist, or all songs")
    parser.add_argument("--mel-frames", type=int, default=112, help="frames per spectrogram (real: up to 1,876)")
    args = parser.parse_args(argv)
    if args.mel_frames < 4:
        parser.error("--mel-frames must be at least 4")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        print(f"error: {args.out} is not empty; pass --force to overwrite it", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        mix = Mix.load(args.config)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gen = Generator(args.scale, args.seed, mix)
    files = gen.generate()
    info = {"scale": args.scale, "seed": args.seed, "sizes": gen.sizes, "themes": gen.K,
            "mix": asdict(gen.mix), "generator": "data.synth"}
    if args.mel != "none":
        for old in args.out.glob("arena_mel_*.tar"):  # --force: no tar of an earlier run may survive
            old.unlink()
        info["mel"] = write_synthetic_mel(gen, files, args.out, args.mel, args.mel_frames)
        log.info("mel-spectrograms: %d songs x %d frames in %d tars, %.2f GB (%.1fs)", info["mel"]["count"],
                 args.mel_frames, info["mel"]["tars"], info["mel"]["bytes"] / 1e9, info["mel"]["seconds"])
    write_dataset(files, args.out, info)
    log.info("wrote %s in %.1fs: %s", args.out, time.perf_counter() - t0,
             ", ".join(f"{k} {len(v)}" for k, v in files.items() if isinstance(v, list)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
