"""Side-by-side scores of several systems, by question type, as a Markdown table.

    python -m evaluate.table NAME=SCORES.json [NAME=SCORES.json ...]

Each SCORES.json is what ``python -m evaluate --questions ... --out SCORES.json`` writes. The table has one
row per question type and system: n, music nDCG@100, tag nDCG@10, score; the best score of each question
type is marked with ``*``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
            named[name] = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
    print(markdown(named))
    return 0


if __name__ == "__main__":
    sys.exit(main())
