"""The figures of the shared README's statistics table, for any Melon-format data folder.

    python -m data.stats DIR [DIR ...] [--json]

Reads whatever of train.json / val.json / test.json / song_meta.json is in each DIR (real or
synthetic). The table has a column per DIR and the real data set's figure beside them. ``--json``
prints one object per DIR (a list when several are given) with these keys:

* ``playlists``: ``{train, val, test}`` record counts of the files present;
* ``songs_in_meta``: records in song_meta.json;
* ``distinct_songs_train``, ``distinct_songs_all``: distinct song ids in train / in all playlist files;
* ``song_entries_train``: song entries in train;
* ``songs_per_playlist``, ``tags_per_playlist``: ``{min, p25, median, mean, p75, max}`` over train;
* ``distinct_tags_train``, ``distinct_tags_all``, ``tag_entries_train``;
* ``tag_singleton_share``: share of distinct train tags carried by exactly one train playlist;
* ``song_singleton_share``: share of distinct train songs in exactly one train playlist;
* ``top_song_playlists``, ``top_song_share``: train playlists holding the most frequent song, and their share;
* ``genres_per_song``: ``{"1": share, "2": share, "3": share, ...}`` of songs by number of major genres;
* ``major_genres_per_playlist``: ``{mean, median, max}`` distinct major genres of a train playlist's songs;
* ``issue_2014_2019_share``: share of songs issued 2014-2019;
* ``shared_title_share``: share of train playlists whose title another train playlist also has.

Keys whose input file is absent are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from data.melon import MelonDataError, load_playlists, load_song_meta

# The real train.json figures (../shared/data/README.md).
REAL = {
    "playlists": {"train": 115_071, "val": 23_015, "test": 10_740},
    "songs_in_meta": 707_989,
    "distinct_songs_train": 615_142,
    "distinct_songs_all": 649_091,
    "song_entries_train": 5_285_871,
    "songs_per_playlist": {"min": 1, "p25": 19, "median": 30, "mean": 45.9, "p75": 54, "max": 200},
    "tags_per_playlist": {"min": 1, "p25": 2, "median": 3, "mean": 4.14, "p75": 6, "max": 11},
    "distinct_tags_train": 29_160,
    "distinct_tags_all": 30_652,
    "tag_entries_train": 476_331,
    "tag_singleton_share": 0.598,
    "song_singleton_share": 0.486,
    "top_song_playlists": 2_175,
    "top_song_share": 0.019,
    "genres_per_song": {"1": 0.867, "2": 0.131, "3": 0.0024},
    "major_genres_per_playlist": {"mean": 6.55, "median": 6, "max": 26},
    "issue_2014_2019_share": 0.5,
    "shared_title_share": 0.021,
}


def _summary(values: list[int]) -> dict:
    a = np.asarray(values)
    return {"min": int(a.min()), "p25": float(np.percentile(a, 25)), "median": float(np.median(a)),
            "mean": round(float(a.mean()), 3), "p75": float(np.percentile(a, 75)), "max": int(a.max())}


def compute(directory: str | Path) -> dict:
    directory = Path(directory)
    files = {name: directory / f"{name}.json" for name in ("train", "val", "test", "song_meta")}
    if not any(p.exists() for p in files.values()):
        raise MelonDataError(f"{directory}: none of train.json, val.json, test.json, song_meta.json found")
    stats: dict = {}
    playlists = {name: load_playlists(files[name]) for name in ("train", "val", "test") if files[name].exists()}
    if playlists:
        stats["playlists"] = {name: len(v) for name, v in playlists.items()}
        all_songs = set()
        all_tags = set()
        for records in playlists.values():
            for p in records:
                all_songs.update(p["songs"])
                all_tags.update(p["tags"])
        stats["distinct_songs_all"] = len(all_songs)
        stats["distinct_tags_all"] = len(all_tags)
    train = playlists.get("train")
    if train:
        song_counts = Counter(s for p in train for s in p["songs"])
        tag_counts = Counter(t for p in train for t in p["tags"])
        top_count = max(song_counts.values()) if song_counts else 0
        titles = Counter(p["plylst_title"] for p in train)
        stats.update({
            "distinct_songs_train": len(song_counts),
            "song_entries_train": sum(song_counts.values()),
            "songs_per_playlist": _summary([len(p["songs"]) for p in train]),
            "tags_per_playlist": _summary([len(p["tags"]) for p in train]),
            "distinct_tags_train": len(tag_counts),
            "tag_entries_train": sum(tag_counts.values()),
            "tag_singleton_share": round(sum(c == 1 for c in tag_counts.values()) / max(1, len(tag_counts)), 4),
            "song_singleton_share": round(sum(c == 1 for c in song_counts.values()) / max(1, len(song_counts)), 4),
            "top_song_playlists": top_count,
            "top_song_share": round(top_count / len(train), 4),
            "shared_title_share": round(sum(c for c in titles.values() if c > 1) / len(train), 4),
        })
    if files["song_meta"].exists():
        meta = load_song_meta(files["song_meta"])
        stats["songs_in_meta"] = len(meta)
        n_genres = Counter(len(set(m["song_gn_gnr_basket"])) for m in meta)
        stats["genres_per_song"] = {str(k): round(v / len(meta), 4) for k, v in sorted(n_genres.items())}
        years = [int(m["issue_date"][:4]) for m in meta]
        stats["issue_2014_2019_share"] = round(sum(2014 <= y <= 2019 for y in years) / len(meta), 4)
        if train:
            per_playlist = [len({g for s in p["songs"] if s < len(meta) for g in meta[s]["song_gn_gnr_basket"]}) for p in train]
            stats["major_genres_per_playlist"] = {k: v for k, v in _summary(per_playlist).items() if k in ("mean", "median", "max")}
    return stats


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def table(columns: dict[str, dict]) -> str:
    """A Markdown table: one row per figure, one column per data folder, then the real value."""
    real = _flat(REAL)
    flat = {name: _flat(stats) for name, stats in columns.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    width = max(12, *(len(n) for n in columns))
    head = "| " + f"{'figure':<34} | " + " | ".join(f"{n:>{width}}" for n in columns) + f" | {'real Melon':>12} |"
    rule = "|" + "-" * 36 + "|" + "|".join("-" * (width + 2) for _ in columns) + "|" + "-" * 14 + "|"
    rows = [head, rule]
    for key in keys:
        cells = " | ".join(f"{str(f.get(key, '')):>{width}}" for f in flat.values())
        rows.append(f"| {key:<34} | {cells} | {str(real.get(key, '')):>12} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("directories", type=Path, nargs="+", metavar="DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object per DIR (keys in the module docstring)")
    args = parser.parse_args(argv)
    try:
        columns = {str(d): compute(d) for d in args.directories}
    except MelonDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        objects = list(columns.values())
        print(json.dumps(objects[0] if len(objects) == 1 else objects, ensure_ascii=False, indent=1))
    else:
        print(table(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
