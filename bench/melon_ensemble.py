"""What the trained DAE adds to the ensemble at Melon's size: the learned ranker over the DAE, the two
neighbour members and popularity, against the same ranker without the DAE.

    python -m bench.melon_ensemble [--keep runs/melon-budget] [--name dae] [--questions 2000]

Reads what ``python -m bench.melon_budget`` left in --keep: the synthetic ``melon`` split and work directory,
the trained DAE run (KEEP/NAME) and the seeded sample of report-half questions. Then:

1. the ensemble's neighbour members on the work directory (``python -m inference.neighbours``, item_cf and
   playlist_cf, made once into KEEP/members);
2. a seeded sample of Q tuning-half questions; on it ``python -m inference.fit_blend`` fits the learned ranker
   twice: for the DAE + item_cf + playlist_cf (+ popularity), and for item_cf + playlist_cf (+ popularity);
3. ``python -m inference`` with each blend on the Q report-half questions (nothing above was fitted on
   them), scored with the official nDCG overall and by question type.

Writes ``bench/results/melon_ensemble[_NAME].{json,md}``: both ensembles, the DAE alone and the best peers
from the melon_budget results of the same run, and the ratio with / without the DAE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import REPO, results_dir, run, save_report
from bench.melon_budget import report_sample, score

KINDS = {"item_cf": "neighbours", "playlist_cf": "playlists"}  # neighbour member -> its folder in KEEP/members


def neighbour_members(work: Path, keep: Path) -> list[str]:
    """``--neighbours DIR`` arguments for the two neighbour members, made when missing."""
    args = []
    for kind, folder in KINDS.items():
        out = keep / "members" / folder
        if not (out / "export/config.json").is_file():
            run([sys.executable, "-m", "inference.neighbours", "--work", work, "--out", out, "--kind", kind],
                keep / f"logs/neighbours-{kind}.log", name=kind)
        args += ["--neighbours", str(out)]
    return args


def ensemble(name: str, models: list[str], work: Path, tune: Path, report: Path, keep: Path) -> dict:
    """The learned ranker over ``models`` fitted on the tuning sample, then scored on the report sample."""
    blend, results = keep / f"blends/{name}.json", keep / f"results/{name}.json"
    fit = run([sys.executable, "-m", "inference.fit_blend", "--questions", tune / "questions/val.json", "--answers",
               tune / "answers/val.json", "--work", work, *models, "--out", blend], keep / f"logs/blend-{name}.log",
              name=f"fit {name}")
    infer = run([sys.executable, "-m", "inference", "--questions", report / "questions/val.json", "--work", work,
                 *models, "--blend", blend, "--out", results, "--no-progress"], keep / f"logs/infer-{name}.log",
                name=name)
    return {**score(report, results), "fit_s": round(fit["wall_s"], 1), "inference_s": round(infer["wall_s"], 1)}


def markdown(result: dict) -> str:
    rows = result["systems"]
    base = rows["ensemble_without_dae"]["score"]
    lines = ["# What the DAE adds to the ensemble at melon size", "",
             f"{result['questions']} report-half questions of the synthetic `melon` split (melon_budget's seeded "
             f"sample); each ranker fitted on {result['questions']} tuning-half questions; `{result['command']}`. "
             f"The DAE: `{result['dae_run']}` ({result['dae_trained']}).", "",
             "| system | music nDCG | tag nDCG | score | / without the DAE |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, s in sorted(rows.items(), key=lambda kv: -kv[1]["score"]):
        lines.append(f"| {name} | {s['music_ndcg']:.4f} | {s['tag_ndcg']:.4f} | {s['score']:.4f} | "
                     f"{s['score'] / base:.3f} |")
    types = sorted(rows["ensemble"]["by_type"])
    lines += ["", "By question type (score):", "", "| system | " + " | ".join(types) + " |",
              "| --- |" + " ---: |" * len(types)]
    for name, s in rows.items():
        if "by_type" in s:
            lines.append(f"| {name} | " + " | ".join(f"{s['by_type'][t]['score']:.4f}" for t in types) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.melon_ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=REPO / "runs/melon-budget", help="bench.melon_budget's folder")
    parser.add_argument("--name", default="dae", help="the trained DAE run in --keep (bench.melon_budget --name)")
    parser.add_argument("--questions", type=int, default=2000, help="tuning questions fitted on, report questions scored")
    args = parser.parse_args(argv)
    budget = "melon_budget" if args.name == "dae" else f"melon_budget_{args.name}"
    budget_path = results_dir() / f"{budget}.json"
    run_dir, work, split = args.keep / args.name, args.keep / "work", args.keep / "split"
    if not budget_path.is_file() or not (run_dir / "export/config.json").is_file():
        parser.error(f"no trained DAE run {run_dir} with its {budget_path}: run python -m bench.melon_budget first")
    started = time.perf_counter()
    trained = json.loads(budget_path.read_text(encoding="utf-8"))
    report = report_sample(split, args.questions, args.keep / "report-sample")
    tune = report_sample(split, args.questions, args.keep / "tune-sample", part="tune")
    neighbours = neighbour_members(work, args.keep)
    systems = {"ensemble": ensemble(f"{args.name}-ensemble", ["--dae", str(run_dir), *neighbours], work, tune, report,
                                    args.keep),
               "ensemble_without_dae": ensemble("ensemble-without-dae", neighbours, work, tune, report, args.keep)}
    systems.update({f"{name} (melon_budget)": trained["systems"][name] for name in ("dae", "item_cf", "playlist_cf")})
    steps = trained["train"]["steps"]
    result = {"command": " ".join(["python -m bench.melon_ensemble", *(sys.argv[1:] if argv is None else argv)]),
              "questions": args.questions, "dae_run": str(run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO)
                                                         else run_dir),
              "dae_trained": f"{steps} steps of {trained['train']['global_batch']}, {budget_path.name}",
              "systems": systems,
              "with_over_without_dae": round(systems["ensemble"]["score"] / systems["ensemble_without_dae"]["score"], 4),
              "total_wall_s": round(time.perf_counter() - started, 1)}
    name = "melon_ensemble" if args.name == "dae" else f"melon_ensemble_{args.name}"
    save_report(name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
