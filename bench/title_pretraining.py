"""Does MLM pretraining help the title BERT? Fine-tuning from the pretrained encoder against from scratch.

    python -m bench.title_pretraining [--run runs/quickstart-small] [--out runs/title-pretraining]
                                      [--pretrain-epochs 20] [--finetune-epochs 3] [--np 2]

On a quickstart run folder (RUN/work, RUN/split), with the trainers' real command lines:

1. ``horovodrun -np N hvd_train/title.py pretrain`` for P epochs -> OUT/pretrain;
2. ``... finetune --init OUT/pretrain`` -> OUT/finetune-pretrained and ``... finetune`` (no --init) ->
   OUT/finetune-scratch, with the same config, seed and F epochs;
3. ``python -m inference --title`` for each fine-tuned model and ``python -m inference.popular``, on every
   validation question (the title model ignores the given items, so every question with a title tests it),
   each scored by the project's evaluator, overall and by question type;
4. a paired bootstrap (2,000 resamples of the questions) of the per-question score difference
   pretrained - scratch, overall and on title-only questions.

Finished stages in OUT are reused (the trainers resume, and a finished run only re-exports), so a rerun
costs the inference only. Writes ``bench/results/title_pretraining.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.common import REPO, run, save_result
from data.melon import load_playlists, load_results
from data.task import question_type
from data.ndcg import evaluate, question_scores
from evaluate.table import markdown


def train(stage: str, work: Path, out: Path, epochs: int, np_: int, init: Path | None = None) -> None:
    cmd = ["horovodrun", "-np", str(np_), sys.executable, "hvd_train/title.py", stage, "--work", str(work),
           "--out", str(out), "--set", f"train.epochs={epochs}", "--set", "train.warmup_steps=300",
           "--set", f"validation.every_epochs={5 if stage == 'pretrain' else 1}"]
    run(cmd + (["--init", str(init)] if init else []), out.with_suffix(".log"), name="bench.title_pretraining")


def paired_bootstrap(a: dict, b: dict, ids: list, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over ``ids``, its 95% bootstrap interval, and on how many questions each side wins."""
    d = np.array([a[i] - b[i] for i in ids])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    return {"n": len(d), "mean_difference": float(d.mean()), "ci95": [float(np.percentile(means, 2.5)),
                                                                        float(np.percentile(means, 97.5))],
            "first_better": int((d > 0).sum()), "second_better": int((d < 0).sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.title_pretraining", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs/quickstart-small", help="quickstart run folder")
    parser.add_argument("--out", type=Path, default=REPO / "runs/title-pretraining")
    parser.add_argument("--pretrain-epochs", type=int, default=20, help="default 20, as launch/quickstart.sh")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--np", type=int, default=2)
    args = parser.parse_args(argv)
    work, split, out = args.run / "work", args.run / "split", args.out
    if not (work / "manifest.json").is_file() or not (split / "answers/val.json").is_file():
        parser.error(f"{args.run}: no work/ and split/ there (run `bash launch/quickstart.sh` first)")

    train("pretrain", work, out / "pretrain", args.pretrain_epochs, args.np)
    train("finetune", work, out / "finetune-pretrained", args.finetune_epochs, args.np, init=out / "pretrain")
    train("finetune", work, out / "finetune-scratch", args.finetune_epochs, args.np)

    questions_file = split / "questions/val.json"
    results = {"popular": out / "results/popular.json"}
    run([sys.executable, "-m", "inference.popular", "--train", str(split / "orig/train.json"),
         "--questions", str(questions_file), "--out", str(results["popular"])], out / "logs/popular.log",
        name="bench.title_pretraining")
    for name in ("pretrained", "scratch"):
        results[name] = out / f"results/{name}.json"
        run([sys.executable, "-m", "inference", "--questions", str(questions_file), "--work", str(work),
             "--title", str(out / f"finetune-{name}"), "--out", str(results[name]), "--no-progress"],
            out / f"logs/inference-{name}.log", name="bench.title_pretraining")

    answers, questions = load_playlists(split / "answers/val.json"), load_playlists(questions_file)
    loaded = {name: load_results(path) for name, path in results.items()}
    scores = {name: evaluate(answers, r, questions) for name, r in loaded.items()}
    per_question = {name: question_scores(answers, loaded[name]) for name in ("pretrained", "scratch")}
    every = sorted(per_question["scratch"])
    title_only = sorted(q["id"] for q in questions if question_type(q) == "title-only")
    summary = {
        "run": str(args.run), "np": args.np, "pretrain_epochs": args.pretrain_epochs,
        "finetune_epochs": args.finetune_epochs, "scores": scores,
        "pretrained_minus_scratch": {"all": paired_bootstrap(per_question["pretrained"], per_question["scratch"], every),
                                     "title-only": paired_bootstrap(per_question["pretrained"], per_question["scratch"],
                                                                    title_only)},
        "title_only_over_popular": {name: scores[name]["by_type"]["title-only"]["score"]
                                    / scores["popular"]["by_type"]["title-only"]["score"]
                                    for name in ("pretrained", "scratch")},
    }
    print(markdown(scores))
    for key, d in summary["pretrained_minus_scratch"].items():
        print(f"pretrained - scratch, {key} ({d['n']} questions): {d['mean_difference']:+.4f}, 95% bootstrap interval "
              f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]; pretrained better on {d['first_better']}, scratch on "
              f"{d['second_better']}")
    print("title-only score / popularity's: " + ", ".join(f"{k} {v:.2f}x" for k, v in summary["title_only_over_popular"].items()))
    save_result("title_pretraining", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
