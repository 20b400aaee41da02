"""Score a results file as the official Kakao Arena evaluator does.

    python -m evaluate --gt ANSWERS --rec RESULTS [--questions QUESTIONS] [--part tune|report] [--json]
                       [--out SCORES_JSON]

Prints music nDCG@100, tag nDCG@10 and score = 0.85 music + 0.15 tag; with ``--questions`` also the
scores by question type (songs-only, songs+tags, tags-only, title-only, empty). ``--json`` prints one
object: ``music_ndcg``, ``tag_ndcg``, ``score``, ``n`` and, with questions, ``by_type`` (type -> the
same four keys). ``--part report`` (or ``tune``) scores only that part of the questions
(data/task.py; needs ``--questions``): the README's quality figures are the report part's.
``--out FILE`` also writes that object to FILE, atomically (a temporary file renamed
into place), so a failed evaluation leaves no file and an old FILE untouched; prefer it to redirecting
stdout, which leaves an empty file behind when the evaluation fails.

An invalid or unreadable input file is one ``error: ...`` line on stderr naming the file, record and
field, and exit status 2; so is an output file that cannot be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data.melon import MelonDataError, load_playlists, load_results, write_json
from data.task import InvalidResults
from data.ndcg import evaluate
from data.task import parts, select


def format_table(scores: dict) -> str:
    rows = [f"{'':<12} {'n':>7} {'music nDCG':>11} {'tag nDCG':>9} {'score':>7}"]
    items = [("all", scores)] + list(scores.get("by_type", {}).items())
    for name, s in items:
        rows.append(f"{name:<12} {s['n']:>7} {s['music_ndcg']:>11.4f} {s['tag_ndcg']:>9.4f} {s['score']:>7.4f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", type=Path, required=True, help="answers file (e.g. SPLIT/answers/val.json)")
    parser.add_argument("--rec", type=Path, required=True, help="results file to score")
    parser.add_argument("--questions", type=Path, help="questions file: adds scores by question type")
    parser.add_argument("--part", choices=("tune", "report"), help="score only this part of the questions "
                        "(data/task.py); needs --questions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file (atomically)")
    args = parser.parse_args(argv)
    if args.part and not args.questions:
        parser.error("--part needs --questions (the parts are made by question type)")
    try:
        answers = load_playlists(args.gt)
        results = load_results(args.rec)
        questions = load_playlists(args.questions) if args.questions else None
        if args.part:
            ids = parts(questions)[args.part]
            answers, results, questions = select(answers, ids), select(results, ids), select(questions, ids)
        scores = evaluate(answers, results, questions)
        if args.part:
            scores["part"] = args.part
        if args.out:
            write_json(scores, args.out)
    except MelonDataError as e:  # names the file, record and field itself
        print(f"error: {e}", file=sys.stderr)
        return 2
    except InvalidResults as e:
        print(f"error: {args.rec} scored against {args.gt}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {args.out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 2
    print(json.dumps(scores, indent=1) if args.json else format_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
