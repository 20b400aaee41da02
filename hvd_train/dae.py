"""Train the DAE data-parallel with Horovod.

    horovodrun -np N python hvd_train/dae.py --config configs/dae.yaml --work WORKDIR --out RUNDIR \
        [--set section.key=value ...]

Every rank reads its own shards of WORKDIR (data/pipeline.py), gradients are averaged with
``hvd.DistributedGradientTape``, the learning rate follows the Transformer warmup schedule scaled by
the number of ranks (configs/dae.yaml). Model and optimizer state are broadcast from rank 0 before
the first step (the optimizer's slots exist from the start, see models/layers.py). Rank 0 alone shows
progress, writes TensorBoard scalars (RUNDIR/tensorboard), checkpoints (RUNDIR/checkpoints: the last K;
RUNDIR/best: the best by validation score) and the inference export (RUNDIR/export: weights.npz +
config.json; RUNDIR/validation_results.json holds the best epoch's validation results). Validation every E
epochs scores top-100 songs / top-10 tags on the work directory's
validation questions, leaving out given items and songs released after the playlist's update, with
the official nDCG; training stops early, on all ranks together, when the score has not improved for
the configured patience. Running the same command again resumes from the latest checkpoint. Started by
horovodrun in elastic mode (--min-np/--max-np/--host-discovery-script) it keeps training while workers
leave and join (hvd_train/elastic.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hvd_train.common import (ConfigError, Validator, check_trainer_config, compute_dtype, per_rank_batch, seed_dropout,
                              steps_per_epoch)
from hvd_train.loop import Task, run, start

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "dae.yaml"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="hvd_train/dae.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--work", type=Path, required=True, help="work directory written by data.preprocess")
    parser.add_argument("--out", type=Path, required=True, help="run directory (created; reused to resume)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser.parse_args(argv)


def check_config(config: dict) -> None:
    def dae_keys(config):
        from models.dae import TARGETS

        if config["loss"]["targets"] not in TARGETS:
            raise ConfigError(f"loss.targets must be one of {list(TARGETS)}")
        for key in ("tied_output", "title"):
            if not isinstance(config["model"][key], bool):
                raise ConfigError(f"model.{key} must be true or false")
        for key in ("title_keep", "title_only"):
            if not 0.0 <= float(config["train"][key]) <= 1.0:
                raise ConfigError(f"train.{key} must be a probability in [0, 1]")

    check_trainer_config(config, ("hidden", "blocks", "heads", "ffn"), dae_keys)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = start(args.config, args.set, args.work, check_config)
    if isinstance(started, int):
        return started
    hvd, config, manifest, _ = started  # the per-rank batch: shard() below
    import tensorflow as tf

    from data.pipeline import training_dataset
    from models.dae import DAE, dae_loss

    rank, size = hvd.rank(), hvd.size()
    train_cfg, model_cfg, loss_cfg, val_cfg = config["train"], config["model"], config["loss"], config["validation"]
    sizes = manifest["sizes"]

    tf.random.set_seed(int(train_cfg["seed"]))
    model = DAE.from_config(model_cfg, sizes, compute_dtype(config))
    seed_dropout(int(train_cfg["seed"]), rank)
    rank_from = int(loss_cfg["rank_from_epoch"]) if loss_cfg["rank_weight"] else None

    def loss(batch, epoch):
        rank_weight = float(loss_cfg["rank_weight"]) if rank_from and epoch >= rank_from else 0.0
        return dae_loss(model, batch, float(loss_cfg["tag_weight"]), float(loss_cfg["artist_weight"]), rank_weight,
                        training=True, item_loss=loss_cfg["item_loss"], targets=loss_cfg["targets"],
                        rank_k=int(loss_cfg["rank_k"]))

    def shard(rank, size):
        """What depends on this rank's place among `size` ranks (rebuilt when an elastic world changes)."""
        batch_size = per_rank_batch(train_cfg, size)
        steps = steps_per_epoch(manifest, size, batch_size, train_cfg.get("steps_per_epoch"))
        validator = Validator(args.work, rank, size, int(val_cfg["batch_size"]),
                              predict=lambda b: model(b["songs"], b["tags"], b["artists"], b["title"],
                                                      training=False, heads=2))

        def batches(epoch):
            return training_dataset(args.work, "dae", rank, size, epoch, batch_size, seed=int(train_cfg["seed"]),
                                    shuffle_buffer=int(train_cfg["shuffle_buffer"]),
                                    interleave_cycle=int(train_cfg["interleave_cycle"]),
                                    interleave_block=int(train_cfg["interleave_block"]),
                                    max_songs=int(train_cfg["max_songs"]),
                                    max_tags=int(train_cfg["max_tags"]),
                                    title_keep=float(train_cfg["title_keep"]) if model_cfg["title"] else 0.0,
                                    title_only=float(train_cfg["title_only"])).repeat().take(steps)

        return {"batches": batches, "steps": steps, "batch_size": batch_size,
                "validate": lambda: validator.gather_and_score(hvd)}

    task = Task(
        name="dae", model=model, variables=list(model.trainable_variables), loss=loss, **shard(rank, size),
        hidden=int(model_cfg["hidden"]), reshard=shard,
        decayed=[v for v in (model.embedding, model.output_table) if v is not None],
        export=lambda epoch, scores: export_config(config, manifest, epoch, scores),
        describe=lambda s: f"music {s['music_ndcg']:.4f} tag {s['tag_ndcg']:.4f} score {s['score']:.4f}",
        loss_variants=lambda epoch: bool(rank_from and epoch >= rank_from),
    )
    return run(hvd, task, config, manifest, args.work, args.out)


def export_config(config: dict, manifest: dict, epoch: int, scores: dict) -> dict:
    return {
        "model": "dae",
        "model_config": config["model"],
        "sizes": manifest["sizes"],
        "vocab_sha256": manifest["files"]["vocab.json"]["sha256"],
        "tokenizer_sha256": manifest["files"]["title.model"]["sha256"],
        "release_dates_sha256": manifest["files"]["release_dates.npz"]["sha256"],
        "epoch": epoch,
        "validation": {k: scores[k] for k in ("music_ndcg", "tag_ndcg", "score")},
        "trained_with": config,
    }


if __name__ == "__main__":
    sys.exit(main())
