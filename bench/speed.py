"""Every speed figure in one run: training throughput and scaling, preprocessing and inference at melon scale.

    python -m bench.speed [--work SMALL_WORKDIR] [--keep DIR] [--scale melon] [--epochs 2] [--set KEY=VALUE ...]

One after the other, in this one invocation (so that the ratios compare figures taken on the same
machine in the same state):

1. ``bench.train_speed``: the DAE trainer under ``horovodrun -np 1`` and ``-np 2`` on SMALL_WORKDIR
   (default: the quickstart's ``runs/quickstart-small/work``): playlists/s, scaling efficiency
   np2 / (2 x np1), and achieved FLOP/s against a dense-matmul peak measured in the same process.
2. ``bench.preprocess_speed --scale SCALE``: ``mpirun -np 1`` and ``-np 2`` preprocessing of the
   synthetic data set: wall time, peak memory per rank, the input pipeline's rate against the trainer's.
3. ``bench.inference_speed --scale SCALE``: ``python -m inference`` on the data set's test questions
   with models of that work directory's exact sizes: wall time and peak memory.

Steps 2 and 3 share DIR (default ``runs/speed-SCALE``: data, split, work directory), generated once and
reused by later runs. Each step writes its own ``bench/results/*.json``; this writes
``bench/results/speed.json`` with the headline ratios and when each step ran (``$MELON_BENCH_RESULTS``
puts all of them elsewhere).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import inference_speed, preprocess_speed, train_speed
from bench.common import REPO, results_dir, save_result


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _step(name: str, main, argv: list[str], results: dict) -> dict:
    print(f"\n== [bench.speed] {name}: python -m bench.{name} {' '.join(argv)}", flush=True)
    started, t0 = _now(), time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"bench.{name} failed")
    result_file = results_dir() / f"{results[name]}.json"
    return {"started": started, "seconds": round(time.perf_counter() - t0, 1),
            "result": json.loads(result_file.read_text(encoding="utf-8")), "file": result_file.name}


def headline(steps: dict) -> dict:
    """The ratios a reader compares, from the three steps' results."""
    train, pre, inf = (steps[k]["result"] for k in ("train_speed", "preprocess_speed", "inference_speed"))
    return {
        "train_playlists_per_s": train["playlists_per_s"],
        "train_scaling_efficiency_np2": train["scaling_efficiency_np2"],
        "train_achieved_over_matmul_peak": train["achieved_over_peak"],
        "preprocess_wall_s": {"np1": pre["np1"]["wall_s"], "np2": pre["np2"]["wall_s"]},
        "preprocess_np2_over_np1_wall": pre["np2_over_np1_wall"],
        "preprocess_np2_wall_vs_5min": pre["np2_wall_vs_5min"],
        "preprocess_np2_peak_rank_vs_8GB": pre["np2_peak_rank_vs_8GB"],
        "input_pipeline_over_trainer": pre["reader_over_trainer"],
        "inference_seconds": inf["seconds"], "inference_peak_rss_gb": inf["peak_rss_gb"],
        "inference_seconds_vs_5min": inf["seconds_over_budget"], "inference_memory_vs_8GB": inf["memory_over_budget"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs/quickstart-small/work",
                        help="work directory for the training throughput (default: the small quickstart's)")
    parser.add_argument("--scale", default="melon", choices=("tiny", "small", "melon"),
                        help="data set size for preprocessing and inference (default melon)")
    parser.add_argument("--keep", type=Path, help="data, split and work directory of SCALE (default runs/speed-SCALE)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per -np (the last one is timed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a DAE trainer config override for the training step (repeatable)")
    args = parser.parse_args(argv)
    if not (args.work / "manifest.json").is_file():
        parser.error(f"{args.work}: no work directory there (run `bash launch/quickstart.sh` first, or pass --work)")
    keep = args.keep or REPO / f"runs/speed-{args.scale}"
    names = {"train_speed": "train_speed", "preprocess_speed": f"preprocess_{args.scale}",
             "inference_speed": f"inference_{args.scale}"}
    steps = {
        "train_speed": _step("train_speed", train_speed.main, ["--work", str(args.work), "--epochs", str(args.epochs),
                                                                *[a for s in args.set for a in ("--set", s)]], names),
        "preprocess_speed": _step("preprocess_speed", preprocess_speed.main,
                                  ["--scale", args.scale, "--keep", str(keep)], names),
        "inference_speed": _step("inference_speed", inference_speed.main, ["--scale", args.scale, "--keep", str(keep)], names),
    }
    summary = {"scale": args.scale, "train_work": str(args.work), "steps": steps, "headline": headline(steps)}
    h = summary["headline"]
    print("\n== [bench.speed] measured in this one run")
    print(f"training (DAE, {args.work}): np=1 {h['train_playlists_per_s']['np1']:.0f}, np=2 "
          f"{h['train_playlists_per_s']['np2']:.0f} playlists/s; scaling efficiency {h['train_scaling_efficiency_np2']:.2f}; "
          f"achieved / matmul peak {h['train_achieved_over_matmul_peak']:.2f}")
    print(f"preprocessing ({args.scale}): np=1 {h['preprocess_wall_s']['np1']:.0f} s, np=2 {h['preprocess_wall_s']['np2']:.0f} s "
          f"(ratio {h['preprocess_np2_over_np1_wall']:.2f}); np=2 wall / 5 min {h['preprocess_np2_wall_vs_5min']:.2f}, "
          f"largest rank / 8 GB {h['preprocess_np2_peak_rank_vs_8GB']:.2f}; input pipeline / trainer "
          f"{h['input_pipeline_over_trainer']:.1f}x")
    print(f"inference ({args.scale} test questions): {h['inference_seconds']:.0f} s, {h['inference_peak_rss_gb']:.2f} GB; "
          f"/ 5 min {h['inference_seconds_vs_5min']:.2f}, / 8 GB {h['inference_memory_vs_8GB']:.2f}")
    save_result("speed", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
