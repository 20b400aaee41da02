"""Ensemble inference on a questions file: a single-device job (the first GPU when there is one, else CPU).

    python -m inference --questions QUESTIONS --work WORKDIR --dae RUNDIR --title RUNDIR --out RESULTS \
        [--word2vec RUNDIR] [--neighbours RUNDIR] [--blend BLEND_JSON] [--audio CNN_RUNDIR]
        [--config configs/ensemble.yaml]

QUESTIONS is any file in the official format (the local split's questions, or the real val.json /
test.json). WORKDIR is the work directory the models were trained on (data.preprocess); --dae, --title,
--word2vec and --neighbours (python -m inference.neighbours) are their run directories (or their export folders).
Any may be left out; --blend takes the weights fitted by python -m inference.fit_blend for exactly these
models, and without it the two BERTs are blended as the reference design did (inference/ensemble.py). Writes RESULTS atomically: exactly 100 songs and 10 tags per question,
ids those of the questions. --audio (a hvd_train/cnn.py run with its audio index) puts songs outside the
vocabulary in the tail of each list, as many as the blend file's audio slots (fit_blend --audio) say.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from data.melon import MelonDataError, load_playlists, write_json
from data.workdir import WorkdirError
from inference import members as registry
from inference.blend import BlendError
from inference.ensemble import DEFAULT_CONFIG, Ensemble, Settings, log
from inference.exports import ExportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=Path, required=True, help="questions in the official format")
    parser.add_argument("--work", type=Path, required=True, help="the work directory the models were trained on")
    registry.add_flags(parser)  # --dae, --title, --word2vec, --neighbours: inference/members.py
    parser.add_argument("--blend", type=Path, help="blend weights per question type (python -m inference.fit_blend)")
    registry.add_audio_flag(parser, "; needs a --blend fitted with it")
    parser.add_argument("--out", type=Path, required=True, help="results file to write")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    runs = registry.given_runs(parser, args)
    if args.audio is not None and args.blend is None:
        parser.error(f"{registry.AUDIO.flag} needs --blend: its tail slots are fitted with the blend "
                     f"(inference.fit_blend {registry.AUDIO.flag})")

    started = time.perf_counter()
    try:
        settings = Settings.load(args.config)
        questions = load_playlists(args.questions)
        ensemble = Ensemble(args.work, runs, settings, args.neighbours, args.blend, args.audio)
    except (MelonDataError, WorkdirError, ExportError, BlendError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    log.info("device: %s; models: %s", gpus[0].name if gpus else "CPU",
             ", ".join([m.label for m in registry.MEMBERS if m.name in ensemble.models] + list(ensemble.neighbours)))
    try:
        results = ensemble.recommend(questions, progress=not args.no_progress)
        write_json(results, args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {args.out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 2
    log.info("wrote %d recommendations to %s in %.1f s", len(results), args.out, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
