"""Fit the ensemble's blend weights per question type on the protocol's tuning questions.

    python -m inference.fit_blend --questions QUESTIONS --answers ANSWERS --work WORKDIR --out BLEND_JSON \
        [--dae RUNDIR] [--title RUNDIR] [--word2vec RUNDIR] [--neighbours RUNDIR ...] [--config configs/ensemble.yaml]
        [--method ranker|grid] [--audio CNN_RUNDIR]

Only the tuning part of QUESTIONS (data/task.py) is read for the fit; the report part stays
untouched. Every member proposes its candidates once (inference/ensemble.py), then inference/ranker.py
fits its learned linear ranker (the default; ``--method grid``: inference/blend.py searches each question
type's song and tag weights on the simplex). BLEND_JSON holds the weights, the members, the work
directory's hashes and the tuning table (each member alone and the blend, nDCG per type); give it to
``python -m inference --blend``. With ``--audio`` (a hvd_train/cnn.py run with its audio index), the
audio member's tail slots per question type are fitted on the same tuning questions after the blend
(inference/audio_member.py) and stored in BLEND_JSON too.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from data.melon import MelonDataError, load_playlists
from data.task import parts, question_type, select
from data.vocab import updt_day
from data.workdir import WorkdirError
from inference import blend, ranker
from inference import members as registry
from inference.audio_member import SLOTS, fit_slots
from inference.blend import Candidates
from inference.ensemble import DEFAULT_CONFIG, Ensemble, Settings, log
from inference.exports import ExportError


def tuning_candidates(ensemble, questions: list[dict]):
    """Every member's Candidates over ``questions`` (popularity included), batch by batch, concatenated;
    the questions' update days [Q] and the vocabulary songs' release days [n_songs]."""
    parts: dict[str, list] = {}
    days = []
    for _, batch_days, release, _, _, proposals in ensemble.batches(questions, popular=True):
        days.append(batch_days)
        for name, c in proposals.items():
            parts.setdefault(name, []).append(c)
    joined = {}
    for name, chunks in parts.items():
        joined[name] = Candidates(*(np.concatenate([getattr(c, f) for c in chunks]) for f in
                                    ("song_items", "song_scores", "tag_items", "tag_scores")))
    return joined, np.concatenate(days), release


def fit_audio(ensemble, blend_path: Path, tuning: list[dict], answers: dict, members: list[str]) -> dict:
    """The audio member's tail slots per question type (inference/audio_member.py ``fit_slots``) for the
    blend just written to ``blend_path``, on the tuning questions: {"slots", "weights_sha256", "tuning"}."""
    ensemble.blend = blend.load(blend_path, ensemble.manifest, members, sorted(ensemble.weak))  # no audio slots yet
    lists = [r["songs"] for r in ensemble.recommend(tuning, progress=False)]
    days = np.array([updt_day(q["updt_date"]) for q in tuning])
    proposed = ensemble.audio.propose(tuning, ensemble.index["tags"], days, ensemble.release_dates, max(SLOTS))
    slots, table = fit_slots(tuning, lists, proposed, {i: a["songs"] for i, a in answers.items()})
    for t, cells in table.items():
        log.info("audio member, %s: song nDCG by tail slots %s -> %d slots", t,
                 ", ".join(f"{m}: {v:.4f}" for m, v in cells.items()), slots[t])
    return {"slots": slots, "weights_sha256": ensemble.audio.weights_sha256, "tuning": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.fit_blend", description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--answers", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    registry.add_flags(parser)  # --dae, --title, --word2vec, --neighbours: inference/members.py
    registry.add_audio_flag(parser, ": fit the audio member's tail slots too")
    parser.add_argument("--out", type=Path, required=True, help="the blend file to write (JSON)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--method", choices=("ranker", "grid"), default="ranker",
                        help="ranker: inference/ranker.py's learned linear ranker (default); grid: inference/blend.py's "
                             "weights on the simplex")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    started = time.perf_counter()
    try:
        questions = load_playlists(args.questions)
        answers = {a["id"]: a for a in load_playlists(args.answers)}
        ensemble = Ensemble(args.work, registry.runs_of(args), Settings.load(args.config), args.neighbours,
                            audio_run=args.audio)
    except (MelonDataError, WorkdirError, ExportError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tuning = select(questions, parts(questions)["tune"])
    if not tuning:
        print(f"error: {args.questions} has no questions; the blend is fitted on the tuning half of a validation "
              "set's questions (data/task.py)", file=sys.stderr)
        return 2
    missing = [q["id"] for q in tuning if q["id"] not in answers]
    if missing:
        print(f"error: {args.answers} has no answer for question id {missing[0]} ({len(missing)} missing)",
              file=sys.stderr)
        return 2
    candidates, days, release = tuning_candidates(ensemble, tuning)
    truth = {"songs": [{ensemble.index["songs"][s] for s in answers[q["id"]]["songs"] if s in ensemble.index["songs"]}
                       for q in tuning],
             "tags": [{ensemble.index["tags"][t] for t in answers[q["id"]]["tags"] if t in ensemble.index["tags"]}
                      for q in tuning]}
    sizes = {kind: np.array([len(answers[q["id"]][kind]) for q in tuning]) for kind in ("songs", "tags")}
    types = [question_type(q) for q in tuning]
    members = list(candidates)
    if args.method == "grid":
        fitted = {"method": "grid", **blend.fit(candidates, truth, sizes, types)}
    else:
        fitted = {"method": "ranker", "ranker": ranker.fit(
            candidates, truth, sizes, types, {"songs": ensemble.song_counts, "tags": ensemble.tag_counts}, days,
            release, ensemble.given_songs(tuning), ensemble.artists)}
        fitted["tuning"] = fitted["ranker"].pop("tuning")
        for kind, dropped in fitted["ranker"]["dropped"].items():
            log.info("ranker %s: lambda %g; left out (their absence raised the cross-validated nDCG): %s", kind,
                     fitted["ranker"]["lambda"][kind], ", ".join(dropped) or "none")
    blend.save(args.out, fitted, ensemble.manifest, members, {"tuning_questions": len(tuning),
                                                             "questions_file": str(args.questions),
                                                             "weak": sorted(ensemble.weak)})
    if ensemble.audio is not None:
        fitted["audio"] = fit_audio(ensemble, args.out, tuning, answers, members)
        blend.save(args.out, fitted, ensemble.manifest, members, {"tuning_questions": len(tuning),
                                                                 "questions_file": str(args.questions),
                                                                 "weak": sorted(ensemble.weak)})
    for t, row in fitted["tuning"].items():
        for kind, cell in row.items():
            if args.method == "grid":
                alone = ", ".join(f"{m} {v:.4f}" for m, v in cell.get("alone", {}).items())
                weights = ", ".join(f"{m} {fitted['weights'][t][m][0 if kind == 'songs' else 1]:.1f}" for m in members)
                log.info("%s %s (n=%d): blend %.4f [%s]; alone: %s", t, kind, cell["n"], cell["blend"], weights, alone)
            else:
                log.info("%s %s (n=%d): ranker %.4f (two-fold cross-validated: %.4f)", t, kind, cell["n"],
                         cell["ranker"], cell["cv"])
    log.info("wrote %s (%d tuning questions) in %.1f s", args.out, len(tuning), time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
