"""The official "most popular" baseline: a floor every model must clear.

    python -m inference.popular --train ORIG_TRAIN --questions QUESTIONS --out RESULTS

For each question: the most frequent training songs and tags that the question does not already hold,
exactly 100 songs and 10 tags (ties broken by the smaller song id / earlier-seen tag, so the output is
deterministic).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from data.melon import MelonDataError, load_playlists, write_json
from data.task import SONGS_PER_PLAYLIST, TAGS_PER_PLAYLIST

log = logging.getLogger("inference.popular")


def _ranked(counts: Counter) -> list:
    return [item for item, _ in sorted(counts.items(), key=lambda kv: -kv[1])]


def _top_unseen(ranked: list, seen: set, n: int, what: str) -> list:
    out = []
    for item in ranked:
        if item not in seen:
            out.append(item)
            if len(out) == n:
                return out
    raise ValueError(f"the training playlists hold only {len(ranked)} distinct {what}: cannot fill {n} unseen ones")


def recommend(train: list[dict], questions: list[dict]) -> list[dict]:
    songs = _ranked(Counter(s for p in train for s in sorted(p["songs"])))  # stable: ties by id
    tags = _ranked(Counter(t for p in train for t in p["tags"]))
    return [
        {
            "id": q["id"],
            "songs": _top_unseen(songs, set(q["songs"]), SONGS_PER_PLAYLIST, "songs"),
            "tags": _top_unseen(tags, set(q["tags"]), TAGS_PER_PLAYLIST, "tags"),
        }
        for q in questions
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.popular", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="training playlists (e.g. SPLIT/orig/train.json)")
    parser.add_argument("--questions", type=Path, required=True, help="questions (e.g. SPLIT/questions/val.json)")
    parser.add_argument("--out", type=Path, required=True, help="results file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        results = recommend(load_playlists(args.train), load_playlists(args.questions))
    except (MelonDataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        write_json(results, args.out)  # atomic: a failed write leaves no file (and an old one untouched)
    except OSError as e:
        print(f"error: {args.out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 2
    log.info("wrote %d recommendations to %s", len(results), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
