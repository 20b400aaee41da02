"""Preprocessing time and memory at -np 1 and -np 2, and the input pipeline's delivery rate.

    python -m bench.preprocess_speed [--scale melon] [--seed 0] [--keep DIR]

Generates (or reuses, in --keep DIR) the synthetic data set and its official split, then runs
``mpirun -np 1`` and ``mpirun -np 2 python -m data.preprocess`` on it, each into a fresh work directory,
and reads each run's own report (wall time, every rank's peak resident memory). Then it times one epoch
of the DAE input pipeline of one rank (corruption included) over that work directory, in playlists/s,
and the rate at which the DAE training step (default config, forward + backward + Adam, one rank)
consumes the same batches. Prints the figures and the ratios measured in this one run: np=2 / np=1
wall time, peak memory per rank against the 8 GB budget, wall time against 5 minutes, reader rate
over training rate.
Writes ``bench/results/preprocess_<scale>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, run, save_result
from hvd_train.common import learning_rate

BUDGET_SECONDS, BUDGET_BYTES = 300.0, 8 * 1024**3


def preprocess(n: int, split: Path, data: Path, out: Path) -> dict:
    report = out.with_suffix(".stats.json")
    run(["mpirun", "-np", str(n), "--oversubscribe", sys.executable, "-m", "data.preprocess", "--split", str(split),
         "--meta", str(data), "--out", str(out), "--force", "--stats-out", str(report)])
    return json.loads(report.read_text())


def pipeline_rate(workdir: Path, batch_size: int = 128) -> dict:
    from data.pipeline import training_dataset

    start = time.perf_counter()
    playlists = batches = 0
    for batch in training_dataset(workdir, "dae", rank=0, size=1, epoch=0, batch_size=batch_size, seed=0):
        playlists += int(batch["id"].shape[0])
        batches += 1
    seconds = time.perf_counter() - start
    return {"playlists": playlists, "seconds": round(seconds, 2), "playlists_per_s": round(playlists / seconds),
            "batches_per_s": round(batches / seconds, 1), "batch_size": batch_size}


def trainer_rate(workdir: Path, batch_size: int = 128, steps: int = 12) -> dict:
    """Playlists/s the DAE training step (default config, forward + backward + Adam) consumes on one rank."""
    import tensorflow as tf

    from data.pipeline import training_dataset
    from hvd_train.config import load_config
    from hvd_train.dae import check_config
    from models.dae import DAE, dae_loss
    from models.layers import Adam

    config = check_config(load_config(REPO / "configs/dae.yaml"))
    sizes = json.loads((workdir / "manifest.json").read_text())["sizes"]
    model = DAE.from_config(config.model, sizes)
    variables = list(model.trainable_variables)
    optimizer = Adam(variables, config.train.beta1, config.train.beta2, config.train.epsilon)
    batches = list(training_dataset(workdir, "dae", 0, 1, 0, batch_size).take(steps + 2))

    @tf.function(reduce_retracing=True)
    def step(batch):
        with tf.GradientTape() as tape:
            loss, _ = dae_loss(model, batch, 0.15, 0.15, 0.0, training=True)
        optimizer.apply(tape.gradient(loss, variables), variables, learning_rate(optimizer.iterations + 1, 240, 4000, 1.0))
        return loss

    for batch in batches[:2]:  # tracing
        step(batch).numpy()
    start = time.perf_counter()
    for batch in batches[2:]:
        step(batch).numpy()
    seconds = time.perf_counter() - start
    return {"playlists_per_s": round(steps * batch_size / seconds, 1), "seconds_per_step": round(seconds / steps, 3),
            "vocab_sizes": {k: sizes[k] for k in ("songs", "tags", "artists")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preprocess_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="melon", choices=["tiny", "small", "melon"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="folder for the data and split (reused when present)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        data, split = root / "data", root / "split"
        if not (data / "synth_info.json").exists():
            run([sys.executable, "-m", "data.synth", "--scale", args.scale, "--seed", str(args.seed), "--out", str(data), "--force"])
        if not (split / "answers/val.json").exists():
            run([sys.executable, "-m", "data.split", str(data / "train.json"), "--out", str(split), "--force"])
        runs = {n: preprocess(n, split, data, Path(tmp) / f"work-np{n}") for n in (1, 2)}
        reader = pipeline_rate(Path(tmp) / "work-np2")
        trainer = trainer_rate(Path(tmp) / "work-np2")
    result = {
        "scale": args.scale,
        "np1": runs[1], "np2": runs[2],
        "np2_over_np1_wall": round(runs[2]["wall_s"] / runs[1]["wall_s"], 3),
        "np2_wall_vs_5min": round(runs[2]["wall_s"] / BUDGET_SECONDS, 3),
        "np2_peak_rank_vs_8GB": round(max(runs[2]["peak_rss_bytes"]) / BUDGET_BYTES, 3),
        "reader_dae": reader,
        "trainer_dae": trainer,
        "reader_over_trainer": round(reader["playlists_per_s"] / trainer["playlists_per_s"], 2),
    }
    for n in (1, 2):
        peaks = ", ".join(f"{b / 1024**3:.2f}" for b in runs[n]["peak_rss_bytes"])
        print(f"-np {n}: {runs[n]['wall_s']:.1f} s, peak memory per rank {peaks} GB")
    print(f"np2/np1 wall time: {result['np2_over_np1_wall']:.2f}; np2 wall / 5 min: {result['np2_wall_vs_5min']:.2f}; "
          f"largest rank / 8 GB: {result['np2_peak_rank_vs_8GB']:.2f}")
    print(f"DAE input pipeline (1 rank, corruption on the fly): {reader['playlists_per_s']} playlists/s, "
          f"{reader['batches_per_s']} batches of {reader['batch_size']}/s")
    print(f"DAE training step (default config, vocabularies {trainer['vocab_sizes']}): {trainer['playlists_per_s']} "
          f"playlists/s; the reader is {result['reader_over_trainer']:.1f}x faster")
    save_result(f"preprocess_{args.scale}", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
