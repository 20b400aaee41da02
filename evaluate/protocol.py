"""The quality protocol's parts of a question file, by question type (data/task.py defines them: the tuning
part chooses every setting, the report part gives every reported figure).

    python -m evaluate.protocol QUESTIONS_JSON   # the parts' sizes by question type
"""

from __future__ import annotations

import sys

from data.melon import load_playlists
from data.task import PARTS, QUESTION_TYPES, parts, question_type


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    questions = load_playlists(argv[0])
    split = parts(questions)
    types = {int(q["id"]): question_type(q) for q in questions}
    print("| question type | tune | report |\n| --- | ---: | ---: |")
    for t in QUESTION_TYPES:
        counts = [sum(1 for pid in split[p] if types[pid] == t) for p in PARTS]
        if any(counts):
            print(f"| {t} | {counts[0]} | {counts[1]} |")
    print(f"| all | {len(split['tune'])} | {len(split['report'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
