"""DAE training throughput at -np 1 and -np 2, scaling efficiency, and achieved FLOP/s against the peak.

    python -m bench.train_speed --work WORKDIR [--epochs 2] [--batch 128]

Runs the real trainer (``horovodrun -np N python hvd_train/dae.py``) for a few epochs at N = 1 and 2
on WORKDIR (validation only at the end) and reads the throughput it reports for its last epoch (the
first includes graph tracing). Then, in this process, it times a dense float32 matmul to measure the
machine's peak, and counts the training step's FLOPs from the model's shapes. Everything is measured
in this one run and reported as ratios:

* scaling efficiency = throughput(np=2) / (2 x throughput(np=1));
* achieved FLOP/s at np=1 = FLOPs per playlist x playlists/s, against the measured matmul peak.

Writes ``bench/results/train_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, run, save_result



def trainer_throughput(np_: int, work: Path, epochs: int, batch: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = ["horovodrun", "-np", str(np_), sys.executable, str(REPO / "hvd_train/dae.py"), "--work", str(work),
               "--out", out, "--set", f"train.epochs={epochs}", "--set", f"train.batch_size={batch}",
               "--set", f"validation.every_epochs={epochs}", *extra]
        output = run(cmd)["output"]
    rates = re.findall(r"\[dae\] epoch \d+: .* ([0-9]+) playlists/s", output)
    return float(rates[-1])


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    import tensorflow as tf

    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    tf.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        c = tf.matmul(a, b)
    c.numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def flops_per_playlist(work: Path, config: dict, batch: int) -> float:
    """Forward + backward (3x forward) FLOPs of one playlist's training step, from real batch shapes."""
    from data.pipeline import training_dataset

    sizes = json.loads((work / "manifest.json").read_text())["sizes"]
    m = config["model"]
    h, f, blocks = m["hidden"], m["ffn"], m["blocks"]
    lengths = []
    for i, b in enumerate(training_dataset(work, "dae", 0, 1, 0, batch)):
        lengths.append(3 + sum(int(b[k].shape[1]) for k in ("songs_in", "tags_in", "artists_in")))
        if i == 20:
            break
    length = sum(lengths) / len(lengths)  # padded tokens per playlist, as the step computes them
    full_block = length * (4 * h * h + 2 * length * h + 2 * h * f) * 2  # projections, attention, FFN
    cls_block = (length * 2 * h * h + 3 * (2 * h * h + 2 * length * h + 2 * h * f)) * 2  # K,V over all; rest on 3 CLS
    heads = h * (sizes["songs"] + sizes["tags"] + sizes["artists"]) * 2
    forward = (blocks - 1) * full_block + cls_block + heads
    return 3 * forward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--set", action="append", default=[], help="extra trainer config overrides")
    args = parser.parse_args(argv)
    extra = [x for item in args.set for x in ("--set", item)]
    rates = {n: trainer_throughput(n, args.work, args.epochs, args.batch, extra) for n in (1, 2)}
    from hvd_train.config import load_config

    config = load_config(REPO / "configs/dae.yaml", args.set)
    peak = matmul_peak()
    flops = flops_per_playlist(args.work, config, args.batch)
    achieved = flops * rates[1]
    result = {
        "work": str(args.work), "batch_per_rank": args.batch, "overrides": args.set,
        "playlists_per_s": {"np1": rates[1], "np2": rates[2]},
        "scaling_efficiency_np2": round(rates[2] / (2 * rates[1]), 3),
        "gflop_per_playlist": round(flops / 1e9, 3),
        "achieved_gflops_np1": round(achieved / 1e9, 1), "matmul_peak_gflops": round(peak / 1e9, 1),
        "achieved_over_peak": round(achieved / peak, 3),
    }
    print(f"throughput: np=1 {rates[1]:.0f} playlists/s, np=2 {rates[2]:.0f} playlists/s; "
          f"scaling efficiency {result['scaling_efficiency_np2']:.2f}")
    print(f"training step: {result['gflop_per_playlist']} GFLOP per playlist; achieved {result['achieved_gflops_np1']} "
          f"GFLOP/s at np=1 against a measured matmul peak of {result['matmul_peak_gflops']} GFLOP/s: "
          f"ratio {result['achieved_over_peak']:.2f}")
    save_result("train_speed", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
