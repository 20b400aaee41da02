"""Does the DAE learn co-occurrence, or only popularity? A diagnostic of its early learning curve.

    python -m bench.dae_learning --work WORKDIR [--lr 1e-3] [--steps 300] [--loss bce|softmax] [--zero-cls] [--overfit-one-batch]

Trains the default-config DAE in one process (constant learning rate, no warmup) on rank 0's half of
the training shards and, every 100 steps, measures recall@100 of the *hidden* songs (a playlist's songs
the corruption left out of the input) on held-out playlists (rank 1's half, another epoch's corruption),
next to the same recall for the popularity ranking. A model that only learned popularity stays at the
popularity line. ``--zero-cls`` starts the CLS embeddings at zero; ``--overfit-one-batch`` instead
trains 300 steps on one batch and reports recall@100 on that batch (can the model learn at all?).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import REPO


def hidden_recall(score_rows, batch) -> list[float]:
    given, targets = batch["songs_in"].numpy(), batch["songs"].numpy()
    out = []
    for i, scores in enumerate(score_rows):
        seen = set(given[i][given[i] >= 0].tolist())
        wanted = set(targets[i][targets[i] >= 0].tolist()) - seen
        if not wanted:
            continue
        scores = scores.copy()
        scores[list(seen)] = -np.inf
        out.append(len(set(np.argpartition(-scores, 100)[:100].tolist()) & wanted) / len(wanted))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dae_learning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--loss", choices=("bce", "softmax"), default="bce", help="the item loss (models/dae.py)")
    parser.add_argument("--zero-cls", action="store_true")
    parser.add_argument("--overfit-one-batch", action="store_true")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from data.pipeline import training_dataset
    from hvd_train.config import load_config
    from hvd_train.dae import check_config
    from models.dae import DAE, dae_loss
    from models.layers import Adam

    sizes = json.loads((args.work / "manifest.json").read_text())["sizes"]
    vocab = json.loads((args.work / "vocab.json").read_text())
    popularity = np.log(np.array([c for _, c in vocab["songs"]], dtype=float))
    tf.random.set_seed(0)
    config = check_config(load_config(REPO / "configs/dae.yaml"))  # the default model, reading no titles
    dropout = 0.0 if args.overfit_one_batch else 0.1
    model = DAE.from_config(dataclasses.replace(config.model, title=False, dropout=dropout), sizes)
    if args.zero_cls:
        model.embedding[model.pad_id - 3: model.pad_id].assign(tf.zeros([3, model.hidden]))
    variables = list(model.trainable_variables)
    optimizer = Adam(variables, config.train.beta1, config.train.beta2, config.train.epsilon)

    @tf.function(reduce_retracing=True)
    def step(batch):
        with tf.GradientTape() as tape:
            loss, _ = dae_loss(model, batch, 0.15, 0.15, 0.0, training=True, item_loss=args.loss)
        optimizer.apply(tape.gradient(loss, variables), variables, args.lr)
        return loss

    def model_scores(batch):
        return model(batch["songs_in"], batch["tags_in"], batch["artists_in"])[0].numpy()

    if args.overfit_one_batch:
        batch = next(iter(training_dataset(args.work, "dae", 0, 1, 0, 64, seed=0)))
        losses = [float(step(batch)) for _ in range(300)]
        targets = batch["songs"].numpy()
        top = tf.math.top_k(model_scores(batch), 100).indices.numpy()
        recall = np.mean([len(set(top[i]) & set(targets[i][targets[i] >= 0])) / max(1, (targets[i] >= 0).sum())
                          for i in range(len(top))])
        print(f"one batch, lr {args.lr}: loss {losses[0]:.4f} -> {losses[-1]:.5f}; recall@100 on it {recall:.3f}")
        return 0

    held_out = list(training_dataset(args.work, "dae", 1, 2, 99, 128, seed=5).take(4))
    baseline = np.mean([r for b in held_out for r in hidden_recall(np.tile(popularity, (b["songs"].shape[0], 1)), b)])
    print(f"popularity: held-out recall@100 of hidden songs {baseline:.4f}")
    done = 0
    for epoch in range(1000):
        for batch in training_dataset(args.work, "dae", 0, 2, epoch, 128, seed=0):
            loss = float(step(batch))
            done += 1
            if done % 100 == 0:
                recall = np.mean([r for b in held_out for r in hidden_recall(model_scores(b), b)])
                print(f"{args.loss} lr {args.lr}{' zero-cls' if args.zero_cls else ''} step {done}: loss {loss:.4f}, "
                      f"held-out recall@100 {recall:.4f}", flush=True)
            if done >= args.steps:
                return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
