"""Vocabularies and corrected release dates, built from the training playlists only.

Vocabularies: items sorted by frequency (ties by id or tag text, so the result does not depend on
file order), kept until the cumulative share of occurrences first exceeds the configured recall (the
item that crosses it is kept, as in the reference design). Artists are counted once per playlist and
only over the songs kept in the song vocabulary.

Release dates: a song's ``issue_date`` (``YYYY0000``/``YYYYMM00`` read as the first of the year/month);
where it is ``00000000``/invalid, or later than the ``updt_date`` of a playlist that holds the song,
the earliest such ``updt_date`` replaces it. A song with no valid date that no playlist holds gets 0,
meaning "never filtered".
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np


def keep_by_recall(counts: Counter, recall: float) -> list[tuple]:
    """``[(item, count)]`` most frequent first, cut where the cumulative share first exceeds ``recall``."""
    if not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(counts.values())
    kept, covered = [], 0
    for item, count in ranked:
        kept.append((item, count))
        covered += count
        if covered > recall * total:
            break
    return kept


def build_vocab(train: list[dict], song_meta: list[dict], song_recall: float, tag_recall: float,
                artist_recall: float) -> dict:
    """The three vocabularies (``[[item, count], ...]``) and each kept song's artists (artist-vocab indices)."""
    songs = keep_by_recall(Counter(s for p in train for s in p["songs"]), song_recall)
    tags = keep_by_recall(Counter(t for p in train for t in p["tags"]), tag_recall)
    kept_songs = {s for s, _ in songs}
    artist_counts = Counter()
    for p in train:
        artist_counts.update({a for s in p["songs"] if s in kept_songs for a in song_meta[s]["artist_id_basket"]})
    artists = keep_by_recall(artist_counts, artist_recall)
    artist_index = {a: i for i, (a, _) in enumerate(artists)}
    song_artists = [sorted({artist_index[a] for a in song_meta[s]["artist_id_basket"] if a in artist_index})
                    for s, _ in songs]
    return {
        "songs": [[s, c] for s, c in songs],
        "tags": [[t, c] for t, c in tags],
        "artists": [[a, c] for a, c in artists],
        "song_artists": song_artists,
        "recall": {"songs": song_recall, "tags": tag_recall, "artists": artist_recall},
    }


def parse_issue_date(value: str) -> int:
    """``YYYYMMDD`` as an int, month/day ``00`` read as 01; 0 when it is no calendar date."""
    year, month, day = int(value[:4]), int(value[4:6]) or 1, int(value[6:8]) or 1
    try:
        dt.date(year, month, day)
    except ValueError:
        return 0
    return year * 10000 + month * 100 + day if year > 0 else 0


def updt_day(updt_date: str) -> int:
    """``'YYYY-MM-DD hh:mm:ss.000'`` as an int ``YYYYMMDD``."""
    return int(updt_date[:4]) * 10000 + int(updt_date[5:7]) * 100 + int(updt_date[8:10])


def release_dates(song_meta: list[dict], playlists: list[dict]) -> np.ndarray:
    """Corrected release date (int YYYYMMDD, 0 = unknown) of every song id in ``song_meta``."""
    issued = np.array([parse_issue_date(m["issue_date"]) for m in song_meta], dtype=np.int64)
    never = np.iinfo(np.int64).max
    earliest = np.full(len(song_meta), never, dtype=np.int64)
    songs = np.fromiter((s for p in playlists for s in p["songs"]), dtype=np.int64)
    days = np.fromiter((updt_day(p["updt_date"]) for p in playlists for _ in p["songs"]), dtype=np.int64)
    if len(songs) and (songs.min() < 0 or songs.max() >= len(song_meta)):
        bad = int(songs[(songs < 0) | (songs >= len(song_meta))][0])
        raise ValueError(f"song id {bad} of a playlist is not in song_meta.json (ids 0..{len(song_meta) - 1})")
    np.minimum.at(earliest, songs, days)
    seen = earliest != never
    replace = seen & ((issued == 0) | (issued > earliest))
    out = issued.copy()
    out[replace] = earliest[replace]
    return out


def item_counts(vocab: dict) -> np.ndarray:
    """[songs + tags] the vocabulary songs' training counts, then the tags' (vocab.json's order)."""
    return np.array([c for _, c in vocab["songs"]] + [c for _, c in vocab["tags"]], dtype=np.float64)
