"""The kill-and-resume drill: what a dead rank costs, measured with real processes and real signals.

    python -m bench.faults --work WORKDIR [--epochs 4] [--np 2] [--set KEY=VALUE ...]

1. **Uninterrupted**: ``horovodrun -np N python hvd_train/dae.py`` for E epochs; its best validation score.
2. **A dead rank**: the same run, SIGKILL to one rank in the middle of epoch 2 (after the first
   checkpoint); how long the whole job takes to exit and with which status, and how many steps were
   lost (steps done since the last checkpoint, read from rank 0's progress bar).
3. **Killed while checkpointing**: the same again, SIGKILL to rank 0 at the moment a checkpoint is
   being written (the drill polls for TensorFlow's temporary checkpoint folder); whether the latest
   checkpoint still loads.
4. **Resume**: each killed run is rerun with the same command; its final best score against the
   uninterrupted one.

Writes ``bench/results/faults.json``. Defaults train a small DAE (hidden 64) so that the drill takes
minutes; pass ``--set`` to change that.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import REPO, run, save_result

SMALL = ["train.batch_size=64", "train.warmup_steps=100", "validation.every_epochs=1", "model.hidden=64",
         "model.ffn=128", "validation.batch_size=256"]


def command(np_: int, work: Path, out: Path, epochs: int, overrides: list[str]) -> list[str]:
    sets = [x for kv in [*SMALL, f"train.epochs={epochs}", *overrides] for x in ("--set", kv)]
    return ["horovodrun", "-np", str(np_), sys.executable, str(REPO / "hvd_train/dae.py"), "--work", str(work),
            "--out", str(out), *sets]


def best_score(log: str) -> float:
    return float(re.search(r"done: best validation score ([0-9.]+)", log).group(1))


def rank_pids(out: Path) -> list[int]:
    pids = []
    for pid in subprocess.run(["pgrep", "-f", "--", f"--out {out}"], capture_output=True, text=True).stdout.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1].endswith("hvd_train/dae.py"):
            pids.append(int(pid))
    return sorted(pids)


def kill_and_time(job: subprocess.Popen, pid: int, timeout: float) -> float:
    """SIGKILL one rank; the seconds until the launcher ``job`` exits (TimeoutExpired past ``timeout``)."""
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    job.wait(timeout=timeout)
    return time.time() - killed_at


def killed_run(cmd: list[str], out: Path, when: str) -> dict:
    """Start the run, SIGKILL a rank (``when`` = "mid-epoch" or "checkpointing"), time the job's exit."""
    job = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(job.stdout.readline, "")), daemon=True)
    reader.start()
    checkpoints = out / "checkpoints"
    try:
        while not (checkpoints / "checkpoint").exists():
            if job.poll() is not None:
                raise SystemExit("the run ended before its first checkpoint:\n" + "".join(output[-50:]))
            time.sleep(0.2)
        if when == "mid-epoch":
            first = time.time()
            while time.time() - first < 3.0:  # a few seconds into epoch 2
                time.sleep(0.2)
            victim, caught = rank_pids(out)[-1], True
        else:  # wait for the next checkpoint write and kill rank 0 in the middle of it
            caught, deadline = False, time.time() + 900
            while time.time() < deadline and job.poll() is None:
                if any("_temp" in p.name for p in checkpoints.iterdir()):
                    caught = True
                    break
                time.sleep(0.005)
            victim = rank_pids(out)[0]
        steps_done = [int(m) for m in re.findall(r"\| *(\d+)/\d+ \[", "".join(output))]
        exit_seconds = kill_and_time(job, victim, 300)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    reader.join(timeout=5)
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(checkpoints))
    try:
        tf.train.load_checkpoint(latest)
        loadable = True
    except (tf.errors.OpError, ValueError, TypeError):
        loadable = False
    return {"killed": "rank 0" if when == "checkpointing" else "last rank", "when": when,
            "caught_during_checkpoint_write": caught if when == "checkpointing" else None,
            "exit_status": job.returncode, "seconds_to_exit": round(exit_seconds, 1),
            "steps_lost": steps_done[-1] if steps_done and when == "mid-epoch" else None,
            "latest_checkpoint": Path(latest).name if latest else None, "latest_checkpoint_loads": loadable}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    report = {"work": str(args.work), "np": args.np, "epochs": args.epochs, "overrides": SMALL + args.set}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.time()
        clean = run(command(args.np, args.work, tmp / "clean", args.epochs, args.set))
        report["uninterrupted"] = {"best_score": best_score(clean["output"]), "seconds": round(time.time() - started, 1)}
        print(f"uninterrupted: best score {report['uninterrupted']['best_score']:.4f}", flush=True)
        for when in ("mid-epoch", "checkpointing"):
            out = tmp / when
            cmd = command(args.np, args.work, out, args.epochs, args.set)
            drill = killed_run(cmd, out, when)
            resumed = run(cmd)
            match = re.search(r"resumed from \S+: epoch (\d+), step (\d+)", resumed["output"])
            drill["resumed_from"] = {"epoch": int(match.group(1)), "step": int(match.group(2))} if match else None
            drill["final_best_score"] = best_score(resumed["output"])
            drill["score_ratio_vs_uninterrupted"] = round(drill["final_best_score"] / report["uninterrupted"]["best_score"], 4)
            report[when] = drill
            print(f"{when}: {drill}", flush=True)
    save_result("faults", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
