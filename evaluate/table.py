"""Side-by-side scores of several systems, by question type, as a Markdown table.

    python -m evaluate.table NAME=SCORES.json [NAME=SCORES.json ...]

Each SCORES.json is what ``python -m evaluate --questions ... --out SCORES.json`` writes. The table has one
row per question type and system: n, music nDCG@100, tag nDCG@10, score; the best score of each question
type is marked with ``*``.

A SCORES.json that is missing, not JSON, or not of that shape (an object with numbers ``music_ndcg``,
``tag_ndcg``, ``score`` and an integer ``n``, and optionally ``by_type``: question type -> the same) is
one ``error: ...`` line naming the file and the key, and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from data.melon import MelonDataError, read_json


SCORE_KEYS = ("music_ndcg", "tag_ndcg", "score")


def _shape_problem(scores: Any) -> str | None:
    """What makes ``scores`` other than what ``python -m evaluate --out`` writes, or None."""
    def one(s: Any, where: str) -> str | None:
        if not isinstance(s, dict):
            return f"{where}expected an object of scores, got {type(s).__name__}"
        for key in (*SCORE_KEYS, "n"):
            if key not in s:
                return f"{where}key '{key}' is missing"
        for key in SCORE_KEYS:
            value = s[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or (isinstance(value, float) and not math.isfinite(value)):
                return f"{where}key '{key}': expected a finite number, got {value!r:.40}"
        if isinstance(s.get("n"), bool) or not isinstance(s.get("n"), int):
            return f"{where}key 'n': expected an integer, got {s.get('n')!r:.40}"
        return None

    problem = one(scores, "")
    if problem is None and "by_type" in scores:
        by_type = scores["by_type"]
        if not isinstance(by_type, dict):
            return f"key 'by_type': expected an object, got {type(by_type).__name__}"
        for kind, s in by_type.items():
            problem = problem or one(s, f"key 'by_type' -> {kind!r:.40}: ")
    return problem


def markdown(named_scores: dict[str, dict]) -> str:
    types = ["all"] + [t for t in next(iter(named_scores.values())).get("by_type", {})]
    lines = ["| question type | system | n | music nDCG | tag nDCG | score |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for kind in types:
        rows = {name: s if kind == "all" else s.get("by_type", {}).get(kind) for name, s in named_scores.items()}
        rows = {name: row for name, row in rows.items() if row}
        best = max(row["score"] for row in rows.values())
        for name, row in rows.items():
            mark = " *" if row["score"] == best and len(rows) > 1 else ""
            lines.append(f"| {kind} | {name} | {row['n']} | {row['music_ndcg']:.4f} | {row['tag_ndcg']:.4f} | "
                         f"{row['score']:.4f}{mark} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluate.table", description=__doc__.split("\n\n")[0])
    parser.add_argument("scores", nargs="+", metavar="NAME=SCORES.json")
    args = parser.parse_args(argv)
    named = {}
    for item in args.scores:
        name, sep, path = item.partition("=")
        if not sep or not name:
            parser.error(f"expected NAME=SCORES.json, got {item!r}")
        try:
            named[name] = read_json(path)
        except MelonDataError as e:  # missing, unreadable, not UTF-8, not JSON: names the file
            print(f"error: {e}", file=sys.stderr)
            return 2
        problem = _shape_problem(named[name])
        if problem:
            print(f"error: {path}: {problem}", file=sys.stderr)
            return 2
    print(markdown(named))
    return 0


if __name__ == "__main__":
    sys.exit(main())
