"""The official local split of Kakao Arena's ``split_data.py``, reproduced call for call.

    python -m data.split TRAIN_JSON --out SPLITDIR [--seed 777] [--mix official|leaderboard] [--force]

writes ``orig/train.json``, ``orig/val.json`` (the unmasked 80/20 split), ``questions/val.json`` and
``answers/val.json``. With the same seed and input it makes the same random calls in the same order as
the official script (``random.shuffle`` of the playlists, then numpy's legacy generator for every mask
and the final shuffle), so on the real ``train.json`` it yields the official split.

Masking, per question type (``official``: 30% songs-only, 50% songs+tags, 15% tags-only, 5% title-only,
taken in that order from the shuffled validation part, then shuffled):

* a *masked* column keeps ``floor(n/2)`` random items in the question and the rest in the answer;
* a *deleted* column is empty in the question and truncated to 100 songs / 10 tags in the answer;
* the title is kept in every question.

``leaderboard`` gives the real val/test mix instead: songs-only 42%, songs+tags 39%, tags+title 11.5%,
title-only 7.5%, and song questions carry no title.
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.melon import MelonDataError, load_playlists, write_json

log = logging.getLogger("data.split")

ANSWER_LIMITS = {"songs": 100, "tags": 10}


@dataclass(frozen=True)
class QuestionType:
    name: str
    upto: float  # cumulative share of the validation playlists (boundaries as the official script writes them)
    mask: tuple[str, ...]
    delete: tuple[str, ...]
    keep_title: bool = True


OFFICIAL_MIX = (
    QuestionType("songs-only", 0.3, ("songs",), ("tags",)),
    QuestionType("songs+tags", 0.8, ("songs", "tags"), ()),
    QuestionType("tags-only", 0.95, ("tags",), ("songs",)),
    QuestionType("title-only", 1.0, (), ("songs", "tags")),
)
LEADERBOARD_MIX = (
    QuestionType("songs-only", 0.42, ("songs",), ("tags",), keep_title=False),
    QuestionType("songs+tags", 0.81, ("songs", "tags"), (), keep_title=False),
    QuestionType("tags+title", 0.925, ("tags",), ("songs",)),
    QuestionType("title-only", 1.0, (), ("songs", "tags")),
)
MIXES = {"official": OFFICIAL_MIX, "leaderboard": LEADERBOARD_MIX}


def _mask(playlists: list[dict], qtype: QuestionType, rng: np.random.RandomState) -> tuple[list[dict], list[dict]]:
    questions, answers = copy.deepcopy(playlists), copy.deepcopy(playlists)
    for q, a, p in zip(questions, answers, playlists):
        for col in qtype.delete:
            q[col] = []
            a[col] = a[col][: ANSWER_LIMITS[col]]
        for col in qtype.mask:
            n = len(p[col])
            keep = np.full(n, False)
            keep[: n // 2] = True
            rng.shuffle(keep)
            q[col] = [x for x, k in zip(p[col], keep) if k]
            a[col] = [x for x, k in zip(p[col], keep) if not k]
        if not qtype.keep_title:
            q["plylst_title"] = ""
    return questions, answers


def mask_questions(
    playlists: list[dict], mix: tuple[QuestionType, ...], rng: np.random.RandomState
) -> tuple[list[dict], list[dict]]:
    """Mask playlists into (questions, answers) exactly as the official ``_mask_data`` does."""
    total = len(playlists)
    questions: list[dict] = []
    answers: list[dict] = []
    start = 0
    for qtype in mix:
        end = int(total * qtype.upto) if qtype.upto < 1.0 else total
        q, a = _mask(playlists[start:end], qtype, rng)
        questions += q
        answers += a
        log.info("%s: %d", qtype.name, end - start)
        start = end
    order = np.arange(len(questions))
    rng.shuffle(order)
    return [questions[i] for i in order], [answers[i] for i in order]


def split(playlists: list[dict], seed: int = 777, train_fraction: float = 0.8,
          mix: tuple[QuestionType, ...] = OFFICIAL_MIX) -> dict[str, list[dict]]:
    """Shuffle, cut train/val and mask val: returns orig/train, orig/val, questions/val, answers/val."""
    playlists = list(playlists)
    random.Random(seed).shuffle(playlists)
    rng = np.random.RandomState(seed)
    cut = int(len(playlists) * train_fraction)
    train, val = playlists[:cut], playlists[cut:]
    questions, answers = mask_questions(val, mix, rng)
    return {"orig/train": train, "orig/val": val, "questions/val": questions, "answers/val": answers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.split", description=__doc__.split("\n\n")[0])
    parser.add_argument("train_json", type=Path, help="a playlist file with full songs/tags (e.g. train.json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=777, help="777 as in the official script")
    parser.add_argument("--mix", choices=sorted(MIXES), default="official")
    parser.add_argument("--train-fraction", type=float, default=0.8,
                        help="0.8 as in the official script (the reference design used 0.9)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing split in --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not 0 < args.train_fraction < 1:
        parser.error("--train-fraction must be between 0 and 1")
    outputs = [args.out / f"{name}.json" for name in ("orig/train", "orig/val", "questions/val", "answers/val")]
    if any(p.exists() for p in outputs) and not args.force:
        print(f"error: {args.out} already holds a split; pass --force to overwrite it", file=sys.stderr)
        return 2
    try:
        playlists = load_playlists(args.train_json)
    except MelonDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parts = split(playlists, args.seed, args.train_fraction, MIXES[args.mix])
    for name, records in parts.items():
        write_json(records, args.out / f"{name}.json")
    log.info("wrote %s: %s", args.out, ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
