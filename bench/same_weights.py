"""Does a refactoring change what training computes? The digest of a tiny 2-rank DAE run's final state.

    python -m bench.same_weights [--out runs/same-weights] [--check bench/results/same_weights.json]

Generates the tiny synthetic set (seed 3), its official split and a 2-rank work directory, trains the DAE
with ``horovodrun -np 2`` for 2 epochs (seed 0, dropout on, the tiny test settings), and takes the
SHA-256 of every tensor in the last checkpoint: model weights, Adam slots and step, and the loop's
counters. Writes ``bench/results/same_weights.json``. With ``--check FILE`` it compares against an earlier
digest instead and exits 1 naming every tensor that differs: run it before a change (committing the
file) and with ``--check`` after it. The digest holds on one machine and TensorFlow build; another CPU
or library version may round differently.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from bench.common import REPO, run, save_result

SETTINGS = ["train.epochs=2", "train.batch_size=64", "train.warmup_steps=20", "validation.every_epochs=1",
            "model.hidden=48", "model.ffn=96", "validation.batch_size=128", "train.seed=0"]


def digests(checkpoint_dir: Path) -> dict[str, str]:
    """{tensor name: SHA-256 of its bytes} for the latest checkpoint in ``checkpoint_dir``."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(checkpoint_dir)))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH")
    return {n: hashlib.sha256(reader.get_tensor(n).tobytes()).hexdigest() for n in names}


def train(out: Path) -> dict[str, str]:
    """The tiny data, split, work directory and 2-rank DAE run in ``out``; the final checkpoint's digests."""
    python = sys.executable
    data, split, work, model = out / "data", out / "split", out / "work", out / "dae"
    run([python, "-m", "data.synth", "--scale", "tiny", "--seed", "3", "--out", data, "--force"], name="synth")
    run([python, "-m", "data.split", data / "train.json", "--out", split, "--seed", "777", "--force"], name="split")
    run(["mpirun", "-np", "2", "--oversubscribe", python, "-m", "data.preprocess", "--split", split, "--meta", data,
         "--out", work, "--force"], name="preprocess")
    if model.exists():
        import shutil

        shutil.rmtree(model)
    sets = [a for s in SETTINGS for a in ("--set", s)]
    run(["horovodrun", "-np", "2", python, REPO / "hvd_train/dae.py", "--work", work, "--out", model, *sets], name="dae")
    return digests(model / "checkpoints")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.same_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs/same-weights")
    parser.add_argument("--check", type=Path, help="an earlier same_weights.json to compare with")
    args = parser.parse_args(argv)
    now = train(args.out)
    combined = hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()
    if args.check is None:
        save_result("same_weights", {"command": "python -m bench.same_weights", "settings": SETTINGS,
                                     "tensors": len(now), "combined_sha256": combined, "digests": now})
        return 0
    before = json.loads(args.check.read_text(encoding="utf-8"))["digests"]
    differ = sorted(n for n in set(before) | set(now) if before.get(n) != now.get(n))
    if differ:
        print(f"{len(differ)} of {len(before)} tensors differ from {args.check}: {', '.join(differ[:20])}")
        return 1
    print(f"all {len(now)} tensors identical to {args.check} (combined sha256 {combined[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
