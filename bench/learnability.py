"""Is a data set learnable but not trivial? A co-occurrence yardstick against the popularity floor.

    python -m bench.learnability SPLITDIR

Scores, on SPLITDIR's questions, (a) the popularity baseline and (b) a plain playlist-neighbour
recommender: training playlists sharing songs or tags with the question vote for their songs and tags
with weight ``shared / sqrt(len)``; the rest is filled by popularity. Prints both scores and their ratio.
A Melon-shaped data set should give the neighbour model several times the popularity score (on the real
data: ~0.05 vs ~0.3). This is a yardstick for the generator, not one of the benchmarked peers (bench/ for
those comes with the benchmark issue).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

from data.melon import load_playlists
from data.task import SONGS_PER_PLAYLIST, TAGS_PER_PLAYLIST
from data.ndcg import evaluate
from inference.popular import recommend as popular


def _top(votes: Counter, seen: set, fallback: list, n: int) -> list:
    out = [item for item, _ in sorted(votes.items(), key=lambda kv: (-kv[1], str(kv[0]))) if item not in seen][:n]
    chosen = set(out)
    for item in fallback:
        if len(out) == n:
            break
        if item not in chosen and item not in seen:
            out.append(item)
            chosen.add(item)
    return out


def neighbours(train: list[dict], questions: list[dict]) -> list[dict]:
    by_song, by_tag = defaultdict(list), defaultdict(list)
    for i, p in enumerate(train):
        for s in p["songs"]:
            by_song[s].append(i)
        for t in p["tags"]:
            by_tag[t].append(i)
    norm = [1.0 / math.sqrt(len(p["songs"]) + len(p["tags"]) + 1) for p in train]
    floor = {r["id"]: r for r in popular(train, questions)}
    results = []
    for q in questions:
        overlap = Counter()
        for s in q["songs"]:
            overlap.update(by_song.get(s, ()))
        for t in q["tags"]:
            overlap.update(by_tag.get(t, ()))
        song_votes, tag_votes = Counter(), Counter()
        for i, shared in overlap.items():
            w = shared * norm[i]
            for s in train[i]["songs"]:
                song_votes[s] += w
            for t in train[i]["tags"]:
                tag_votes[t] += w
        fallback = floor[q["id"]]
        results.append({
            "id": q["id"],
            "songs": _top(song_votes, set(q["songs"]), fallback["songs"], SONGS_PER_PLAYLIST),
            "tags": _top(tag_votes, set(q["tags"]), fallback["tags"], TAGS_PER_PLAYLIST),
        })
    return results


def compare(split: Path) -> dict:
    train = load_playlists(split / "orig/train.json")
    questions = load_playlists(split / "questions/val.json")
    answers = load_playlists(split / "answers/val.json")
    pop = evaluate(answers, popular(train, questions), questions)
    nbr = evaluate(answers, neighbours(train, questions), questions)
    return {"popular": pop, "neighbours": nbr, "score_ratio": nbr["score"] / pop["score"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.learnability", description=__doc__.split("\n\n")[0])
    parser.add_argument("split", type=Path, help="a folder written by data.split")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = compare(args.split)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{'':<12} {'popular':>9} {'neighbours':>11}")
    for qtype in ["all"] + list(result["popular"]["by_type"]):
        p = result["popular"] if qtype == "all" else result["popular"]["by_type"][qtype]
        n = result["neighbours"] if qtype == "all" else result["neighbours"]["by_type"][qtype]
        print(f"{qtype:<12} {p['score']:>9.4f} {n['score']:>11.4f}")
    print(f"score ratio neighbours / popular: {result['score_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
