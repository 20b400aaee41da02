"""The quality protocol: which validation questions choose settings and which report scores.

Every choice made by looking at scores (best-epoch selection and early stopping in the trainers, every
peer's grid, the ensemble's blend weights) uses the *tuning* part of the validation questions only; every
quality figure in the README is measured on the *report* part only, which nothing was tuned on.

The parts are fixed by playlist id and stratified by question type: within each type
(:data:`evaluate.ndcg.QUESTION_TYPES`), the questions are ordered by a hash of their id (the 64-bit
SplitMix64 finaliser, so neither the id order nor the generator's numbering decides) and the first half,
rounded up, is the tuning part. The assignment depends only on the ids and the types of the questions in
the set, so the same question file always gives the same parts, on any machine, in any process.

    python -m evaluate.protocol QUESTIONS_JSON   # the parts' sizes by question type
"""

from __future__ import annotations

import sys
from collections import defaultdict

from evaluate.ndcg import QUESTION_TYPES, question_type

PARTS = ("tune", "report")
_MASK = (1 << 64) - 1


def _mix(playlist_id: int) -> int:
    """SplitMix64's finaliser: a fixed, well-spread 64-bit hash of an integer id."""
    z = (int(playlist_id) + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def parts(questions: list[dict]) -> dict[str, set[int]]:
    """``{"tune": ids, "report": ids}``: each question type split in half by the hash of the ids (the tuning
    half gets the odd one out)."""
    by_type: dict[str, list[int]] = defaultdict(list)
    for q in questions:
        by_type[question_type(q)].append(int(q["id"]))
    out = {"tune": set(), "report": set()}
    for ids in by_type.values():
        ordered = sorted(ids, key=lambda pid: (_mix(pid), pid))
        half = (len(ordered) + 1) // 2
        out["tune"].update(ordered[:half])
        out["report"].update(ordered[half:])
    return out


def select(playlists: list[dict], ids: set[int]) -> list[dict]:
    """The playlists (questions, answers or results) whose id is in ``ids``, in their order."""
    return [p for p in playlists if p.get("id") in ids]


def main(argv: list[str] | None = None) -> int:
    from data.melon import load_playlists

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
