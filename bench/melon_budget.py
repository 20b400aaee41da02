"""The DAE at Melon's size in one sitting: a fixed wall-clock budget of training, then the DAE against the
classical peers on report questions.

    python -m bench.melon_budget [--minutes 25] [--questions 2000] [--np 2] [--keep runs/melon-budget]
                                 [--steps-per-epoch 200] [--set KEY=VALUE ...]

1. The synthetic set at ``melon`` scale (``data.synth --scale melon``, seed 0; 233k songs in the DAE's
   vocabulary, 92k training playlists), its official split and work directory (``data.split``,
   ``mpirun -np 2 data.preprocess``), reused from --keep when complete.
2. ``horovodrun -np N hvd_train/dae.py`` with the main job's short schedule and :data:`SETTINGS` (the sampled
   output, rows as gradients, the output heads started from popularity on an untied table),
   ``train.max_minutes=M``, "epochs" of --steps-per-epoch steps and validation on
   the tuning questions after each: the curve of where more time would take it. Resumed when the run
   folder exists (the budget counts the new minutes).
3. The DAE's export (``python -m inference --dae``), ``item_cf`` and ``playlist_cf`` (bench.peers, their
   settings tuned on ``small``) on Q report-half questions (a seeded sample), scored with the official nDCG
   overall and by question type.

Writes ``bench/results/melon_budget.json`` and ``.md``: the table, DAE / item_cf, and the validation curve.
The defaults keep the whole command within 60 minutes on a 2-core machine once the data exists (the first
run adds about 10 minutes of generation and preprocessing).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

from bench.common import REPO, results_dir, run, save_markdown, save_report
from bench.peers import DEFAULTS
from data.melon import load_playlists, load_results, write_json
from data.ndcg import evaluate
from data.task import parts, select

# the main job's DAE (launch/quickstart.sh's short schedule) with the sampled output, and the output heads
# started from popularity on an untied table (0.883x item_cf after 1,000 steps against 0.561x from the
# reference's start: bench/results/melon_budget_untied_pop.md, melon_budget_reference.md)
SETTINGS = ["train.warmup_steps=200", "train.lr_multiplier=0.15", "train.weight_decay=1.0", "loss.output=sampled",
            "hardware.sparse_as_dense=false", "train.output_init=popularity", "model.tied_output=false",
            "validation.every_epochs=1", "validation.max_questions=2000",
            # one checkpoint and the best: a melon-size checkpoint with its Adam slots is 1.8 GB (3.6 GB at
            # model.hidden=480), and a variant run that kept 3 + the best filled this machine's disk
            "checkpoint.keep_last=1"]
PEERS = ("item_cf", "playlist_cf")


def prepare_data(keep: Path, song_recall: float | None = None) -> tuple[Path, Path, Path]:
    """(data, split, work) at melon scale under ``keep``, made when missing. ``song_recall``: a work directory
    of its own (``work-recallR``) whose song vocabulary covers that share of the training occurrences in place
    of configs/data.yaml's (the vocabulary cutoff); the data and split are shared."""
    data, split, work = keep / "data", keep / "split", keep / "work"
    config = []
    if song_recall is not None:
        work = keep / f"work-recall{song_recall:g}"
        config = ["--config", data_config(song_recall, keep / f"configs/data-recall{song_recall:g}.yaml")]
    if not (data / "song_meta.json").exists():
        run([sys.executable, "-m", "data.synth", "--scale", "melon", "--seed", "0", "--out", data, "--force"],
            keep / "logs/synth.log", name="synth")
    if not (split / "answers/val.json").exists():
        run([sys.executable, "-m", "data.split", data / "train.json", "--out", split, "--seed", "777"],
            keep / "logs/split.log", name="split")
    if not (work / "manifest.json").exists():
        run(["mpirun", "-np", "2", "--oversubscribe", sys.executable, "-m", "data.preprocess", "--split", split,
             "--meta", data, "--out", work, "--force", *config], keep / f"logs/preprocess-{work.name}.log",
            name="preprocess")
    return data, split, work


def data_config(song_recall: float, path: Path) -> Path:
    """configs/data.yaml with ``vocab.song_recall`` replaced, written to ``path``."""
    import yaml

    config = yaml.safe_load((REPO / "configs/data.yaml").read_text(encoding="utf-8"))
    config["vocab"]["song_recall"] = song_recall
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def report_sample(split: Path, n: int, out: Path, seed: int = 0, part: str = "report") -> Path:
    """A split folder holding ``n`` questions of the protocol's ``part`` (report or tune; a seeded sample) and
    their answers, the training playlists linked: what bench.peers reads."""
    questions = load_playlists(split / "questions/val.json")
    half = sorted(parts(questions)[part])
    chosen = set(random.Random(seed).sample(half, min(n, len(half))))
    for kind in ("questions", "answers"):
        write_json(select(load_playlists(split / f"{kind}/val.json"), chosen), out / kind / "val.json")
    (out / "orig").mkdir(parents=True, exist_ok=True)
    link = out / "orig/train.json"
    if not link.exists():
        link.symlink_to((split / "orig/train.json").resolve())
    return out


def train(work: Path, run_dir: Path, np_: int, minutes: float, steps: int, extra: list[str], log: Path) -> dict:
    sets = [*SETTINGS, f"train.max_minutes={minutes}", f"train.steps_per_epoch={steps}", "train.epochs=1000", *extra]
    cmd = ["horovodrun", "-np", str(np_), sys.executable, REPO / "hvd_train/dae.py", "--work", work, "--out", run_dir]
    for item in sets:
        cmd += ["--set", item]
    return run(cmd, log, name="dae")


def curve(output: str) -> list[dict]:
    """(epoch, loss, playlists/s, validation score) of each epoch line of the trainer's output."""
    rows = []
    pattern = (r"\[dae\] epoch (\d+): loss ([0-9.]+), lr [0-9.e+-]+, (\d+) playlists/s; validation music ([0-9.]+) "
               r"tag ([0-9.]+) score ([0-9.]+)")
    for epoch, loss, rate, music, tag, score in re.findall(pattern, output):
        rows.append({"epoch": int(epoch), "loss": float(loss), "playlists_per_s": int(rate), "music_ndcg": float(music),
                     "tag_ndcg": float(tag), "score": float(score)})
    return rows


def spent_minutes(output: str) -> float | None:
    """The trainer's own count of its training minutes (train.max_minutes' closing line)."""
    found = re.findall(r"time budget spent: ([0-9.]+) of", output)
    return float(found[-1]) if found else None


def score(sample: Path, results: Path) -> dict:
    return evaluate(load_playlists(sample / "answers/val.json"), load_results(results),
                    load_playlists(sample / "questions/val.json"))


def markdown(result: dict) -> str:
    trained = (f"{result['minutes']:g} minutes of training" if result["train"]["minutes"] is not None else
               f"{result['train']['steps']} steps of training")
    lines = [f"# The DAE at melon size after {trained} (-np {result['np']})", "",
             f"{result['questions']} report-half questions of the synthetic `melon` split (a seeded sample); "
             f"`{result.get('command', 'python -m bench.melon_budget --minutes %g' % result['minutes'])}`.", "",
             *([f"The DAE's vocabulary: {result['sizes']['songs']:,} songs, {result['sizes']['tags']:,} tags, "
                f"{result['sizes']['artists']:,} artists.", ""] if "sizes" in result else []),
             "| system | music nDCG | tag nDCG | score | / item_cf |", "| --- | ---: | ---: | ---: | ---: |"]
    base = result["systems"]["item_cf"]["score"]
    for name, scores in result["systems"].items():
        lines.append(f"| {name} | {scores['music_ndcg']:.4f} | {scores['tag_ndcg']:.4f} | {scores['score']:.4f} | "
                     f"{scores['score'] / base:.3f} |")
    minutes = result["train"]["minutes"]  # the trainer's own count, when the budget ended the run
    spent = (f"{minutes:.1f} min" if minutes is not None else
             f"{result['train']['command_wall_s'] / 60:.1f} min of horovodrun wall time (its start-up and validations "
             f"included; the run ended by its epoch count, not the budget)")
    lines += ["", f"Training: {spent} for {result['train']['steps']} steps "
              f"of {result['train']['global_batch']} playlists; validation on the tuning questions after each "
              f"{result['train']['steps_per_epoch']}-step epoch:", "",
              "| epoch | loss | playlists/s | music nDCG | tag nDCG | score |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["curve"]:
        lines.append(f"| {row['epoch']} | {row['loss']:.4f} | {row['playlists_per_s']} | {row['music_ndcg']:.4f} | "
                     f"{row['tag_ndcg']:.4f} | {row['score']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.melon_budget", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="the DAE's training budget (wall minutes)")
    parser.add_argument("--questions", type=int, default=2000, help="report-half questions scored")
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=200, help="steps between validations")
    parser.add_argument("--keep", type=Path, default=REPO / "runs/melon-budget", help="data, runs and logs")
    parser.add_argument("--set", action="append", default=[], help="a further trainer override KEY=VALUE")
    parser.add_argument("--name", default="dae",
                        help="the run's name: its folder in --keep and, unless dae, the results' suffix "
                             "(bench/results/melon_budget_NAME.*): a variant beside the main run, on the same data")
    parser.add_argument("--song-recall", type=float, default=None,
                        help="the vocabulary cutoff: the DAE's songs cover this share of the training occurrences "
                             "(configs/data.yaml: 0.90), in a work directory of its own beside the default one")
    parser.add_argument("--markdown", action="store_true",
                        help="only write the .md again from the run's results JSON (bench/results/melon_budget[_NAME].json)")
    parser.add_argument("--no-train", action="store_true",
                        help="score the run already in --keep (its log gives the curve; the wall time is not known)")
    args = parser.parse_args(argv)
    name = "melon_budget" if args.name == "dae" else f"melon_budget_{args.name}"
    if args.markdown:
        save_markdown(name, markdown(json.loads((results_dir() / f"{name}.json").read_text(encoding="utf-8"))))
        return 0
    run_dir, log = args.keep / args.name, args.keep / f"logs/{args.name}.log"
    if args.no_train and not log.is_file():
        parser.error(f"--no-train: no trained run in {args.keep} (no {log}); run without --no-train first")
    started = time.perf_counter()
    if args.song_recall is not None and not 0.0 < args.song_recall <= 1.0:
        parser.error("--song-recall must be in (0, 1]")
    data, split, work = prepare_data(args.keep, args.song_recall)
    sample = report_sample(split, args.questions, args.keep / "report-sample")
    if args.no_train:
        trained = {"output": log.read_text(encoding="utf-8"), "wall_s": None, "peak_rss_gb": None}
    else:
        trained = train(work, run_dir, args.np, args.minutes, args.steps_per_epoch, args.set, log)
    systems, timings = {}, {}
    results = args.keep / "results"
    dae_run = run([sys.executable, "-m", "inference", "--questions", sample / "questions/val.json", "--work", work,
                   "--dae", run_dir, "--out", results / f"{args.name}.json", "--no-progress"],
                  args.keep / f"logs/infer-{args.name}.log", name="inference")
    systems["dae"], timings["dae"] = score(sample, results / f"{args.name}.json"), dae_run["wall_s"]
    for peer in PEERS:
        peer_run = run([sys.executable, "-m", "bench.peers", peer, "--split", sample, "--meta", data,
                        "--out", results / f"{peer}.json"], args.keep / f"logs/{peer}.log", name=peer)
        systems[peer], timings[peer] = score(sample, results / f"{peer}.json"), peer_run["wall_s"]
    manifest = json.loads((work / "manifest.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    epochs = curve(trained["output"])
    result = {
        "command": " ".join(["python -m bench.melon_budget", *(sys.argv[1:] if argv is None else argv)]),
        "name": args.name, "minutes": args.minutes, "np": args.np, "questions": args.questions, "settings": SETTINGS + args.set,
        "sizes": manifest["sizes"], "train_playlists": manifest["records"]["train"],
        "train": {"minutes": spent_minutes(trained["output"]), "command_wall_s": trained["wall_s"],
                  "steps": len(epochs) * args.steps_per_epoch,
                  "steps_per_epoch": args.steps_per_epoch, "global_batch": config["train"]["batch_size"] * args.np,
                  "peak_rss_gb": trained["peak_rss_gb"]},
        "curve": epochs,
        "systems": systems, "peer_settings": {peer: DEFAULTS[peer] for peer in PEERS}, "seconds": {k: round(v, 1) for k, v in timings.items()},
        "dae_over_item_cf": round(systems["dae"]["score"] / systems["item_cf"]["score"], 3),
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    save_report(name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
