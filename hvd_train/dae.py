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
the configured patience. Running the same command again resumes from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from hvd_train.common import (ConfigError, average, describe_horovod, fail, init_horovod, learning_rate, load_config,
                              lr_scale, per_rank_batch, score_results, top_unseen, write_export)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "dae.yaml"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="hvd_train/dae.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--work", type=Path, required=True, help="work directory written by data.preprocess")
    parser.add_argument("--out", type=Path, required=True, help="run directory (created; reused to resume)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser.parse_args(argv)


def check_config(config: dict) -> None:
    try:
        for key in ("hidden", "blocks", "heads", "ffn"):
            if int(config["model"][key]) <= 0:
                raise ConfigError(f"model.{key} must be positive")
        if config["model"]["activation"] not in ("gelu", "relu"):
            raise ConfigError("model.activation must be gelu or relu")
        lr_scale(config["train"]["lr_scaling"], 1)
        for key in ("epochs", "warmup_steps", "batch_size"):
            if int(config["train"][key]) <= 0:
                raise ConfigError(f"train.{key} must be positive")
        for key in ("every_epochs", "patience_epochs", "batch_size"):
            if int(config["validation"][key]) <= 0:
                raise ConfigError(f"validation.{key} must be positive")
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config is missing or has a malformed setting: {e}") from None


def steps_per_epoch(manifest: dict, size: int, batch: int) -> int:
    """The same number of steps on every rank: what the rank with the fewest records can fill."""
    shards = manifest["shards"]["train"]
    fewest = min(sum(s["records"] for s in shards[rank::size]) for rank in range(size))
    return max(1, fewest // batch)


def variables_by_path(module) -> dict:
    import tensorflow as tf

    return {"/".join(str(p) for p in path): v.numpy()
            for path, v in module._flatten(with_path=True, predicate=lambda x: isinstance(x, tf.Variable))}


class Validator:
    """This rank's share of the validation questions -> results in the official format."""

    def __init__(self, workdir: Path, rank: int, size: int, batch: int):
        from data.pipeline import eval_dataset

        vocab = json.loads((workdir / "vocab.json").read_text(encoding="utf-8"))
        self.song_ids = np.array([s for s, _ in vocab["songs"]])
        self.tags = [t for t, _ in vocab["tags"]]
        release = np.load(workdir / "release_dates.npz", allow_pickle=False)["release_dates"]
        self.song_release = release[self.song_ids]
        self.dataset = eval_dataset(workdir, batch, rank, size)

    def results(self, model) -> list[dict]:
        out = []
        for batch in self.dataset:
            song_logits, tag_logits, _ = model(batch["songs"], batch["tags"], batch["artists"], training=False)
            future = self.song_release[None, :] > batch["updt_date"].numpy()[:, None]
            songs = top_unseen(song_logits.numpy(), batch["songs"].numpy(), future, 100)
            tags = top_unseen(tag_logits.numpy(), batch["tags"].numpy(), None, 10)
            for pid, s, t in zip(batch["id"].numpy(), songs, tags):
                out.append({"id": int(pid), "songs": self.song_ids[s].tolist(), "tags": [self.tags[i] for i in t]})
        return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # before hvd.init(): a bad config stops every rank at once, with nothing to wait for
        config = load_config(args.config, args.set)
        check_config(config)
    except ConfigError as e:
        return fail(str(e))

    hvd = init_horovod()
    import tensorflow as tf
    from tqdm import tqdm

    from data.melon import write_json
    from data.pipeline import training_dataset
    from data.preprocess import WorkdirError, verify_workdir
    from models.dae import DAE, dae_loss
    from models.layers import Adam

    rank, size = hvd.rank(), hvd.size()
    train_cfg, model_cfg, loss_cfg, val_cfg = config["train"], config["model"], config["loss"], config["validation"]
    try:
        batch_size = per_rank_batch(train_cfg, size)
    except ConfigError as e:
        return fail(str(e), rank)
    problem = None
    if rank == 0:
        try:
            manifest = verify_workdir(args.work)
            if len(manifest["shards"]["train"]) < size:
                problem = f"{args.work}: {len(manifest['shards']['train'])} training shards for {size} ranks"
        except WorkdirError as e:
            problem = str(e)
    problem = hvd.broadcast_object(problem, root_rank=0, name="workdir_check")
    if problem:
        return fail(problem, rank)
    manifest = json.loads((args.work / "manifest.json").read_text(encoding="utf-8"))
    sizes = manifest["sizes"]

    tf.random.set_seed(int(train_cfg["seed"]))
    model = DAE(sizes["songs"], sizes["tags"], sizes["artists"], **model_cfg)
    variables = list(model.trainable_variables)
    optimizer = Adam(variables, float(train_cfg["beta1"]), float(train_cfg["beta2"]), float(train_cfg["epsilon"]))
    epoch_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    best_score = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_score")
    best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_done, best_score=best_score,
                                     best_epoch=best_epoch)
    resumed = None
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        latest = tf.train.latest_checkpoint(str(args.out / "checkpoints"))
        identity = {name: manifest["files"][name]["sha256"] for name in ("vocab.json", "title.model", "release_dates.npz")}
        recorded = args.out / "workdir.json"
        if latest and recorded.exists() and json.loads(recorded.read_text(encoding="utf-8")) != identity:
            resumed = (f"ERROR {args.out} holds checkpoints trained on another work directory (other vocabularies "
                       f"or tokenizer than {args.work}); use a new --out")
        elif latest:
            try:
                checkpoint.restore(latest).assert_existing_objects_matched()
                resumed = latest
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                resumed = f"ERROR {latest} does not fit this model/config: {str(e).splitlines()[0]}"
        if not resumed or not resumed.startswith("ERROR"):
            write_json(identity, recorded)
    resumed = hvd.broadcast_object(resumed, root_rank=0, name="resume")
    if resumed and resumed.startswith("ERROR"):
        return fail(resumed[6:], rank)
    # Every rank starts from rank 0's weights, optimizer slots and counters.
    hvd.broadcast_variables(checkpoint_variables(model, optimizer, epoch_done, best_score, best_epoch), root_rank=0)

    steps = steps_per_epoch(manifest, size, batch_size)
    hidden, warmup = int(model_cfg["hidden"]), int(train_cfg["warmup_steps"])
    scale = lr_scale(train_cfg["lr_scaling"], size)
    writer = tf.summary.create_file_writer(str(args.out / "tensorboard")) if rank == 0 else None
    managers = (tf.train.CheckpointManager(checkpoint, str(args.out / "checkpoints"), int(config["checkpoint"]["keep_last"])),
                tf.train.CheckpointManager(checkpoint, str(args.out / "best"), 1)) if rank == 0 else None
    if rank == 0:
        write_json(config, args.out / "config.json")
        print(f"[dae] {describe_horovod(hvd)}", flush=True)
        print(f"[dae] global batch {batch_size * size} ({batch_size} x {size} ranks), {steps} steps per epoch; "
              f"learning rate {scale:g} x {hidden}^-0.5 x min(step^-0.5, step x {warmup}^-1.5): peak "
              f"{float(learning_rate(warmup, hidden, warmup, scale)):.3e} at step {warmup} "
              f"({train_cfg['lr_scaling']} scaling over {size} ranks)", flush=True)
        if resumed:
            print(f"[dae] resumed from {resumed}: epoch {int(epoch_done.numpy())}, step {int(optimizer.iterations.numpy())}, "
                  f"best score {float(best_score.numpy()):.4f} (epoch {int(best_epoch.numpy())})", flush=True)

    def make_step(rank_weight: float):
        def step(batch):
            with tf.GradientTape() as tape:
                loss, parts = dae_loss(model, batch, float(loss_cfg["tag_weight"]), float(loss_cfg["artist_weight"]),
                                       rank_weight, training=True)
            tape = hvd.DistributedGradientTape(tape)
            gradients = tape.gradient(loss, variables)
            lr = learning_rate(optimizer.iterations + 1, hidden, warmup, scale)
            optimizer.apply(gradients, variables, lr)
            return loss, parts, lr
        return step

    def epoch_batches(epoch: int):
        """This rank's batches of one epoch: the same number of steps on every rank (repeat, then take)."""
        return training_dataset(args.work, "dae", rank, size, epoch, batch_size, seed=int(train_cfg["seed"]),
                                shuffle_buffer=int(train_cfg["shuffle_buffer"]), max_songs=int(train_cfg["max_songs"]),
                                max_tags=int(train_cfg["max_tags"])).repeat().take(steps)

    signature = [epoch_batches(1).element_spec]
    plain_step = tf.function(make_step(0.0), input_signature=signature)
    ranking_step = tf.function(make_step(float(loss_cfg["rank_weight"])), input_signature=signature)
    validator = Validator(args.work, rank, size, int(val_cfg["batch_size"]))

    epochs, every, patience = int(train_cfg["epochs"]), int(val_cfg["every_epochs"]), int(val_cfg["patience_epochs"])
    for epoch in range(int(epoch_done.numpy()) + 1, epochs + 1):
        step_fn = ranking_step if loss_cfg["rank_weight"] and epoch >= int(loss_cfg["rank_from_epoch"]) else plain_step
        sums, started = {}, time.perf_counter()
        progress = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", disable=rank != 0, unit="step", leave=False)
        for batch in epoch_batches(epoch):
            loss, parts, lr = step_fn(batch)
            for name, value in {"loss": loss, **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            progress.update(1)
            progress.set_postfix(loss=f"{float(loss):.4f}")
        progress.close()
        seconds = time.perf_counter() - started
        metrics = average(hvd, {k: v / steps for k, v in sums.items()})
        throughput = steps * batch_size * size / seconds
        epoch_done.assign(epoch)
        line = f"[dae] epoch {epoch}: loss {metrics['loss']:.5f}, lr {float(lr):.3e}, {throughput:.0f} playlists/s"

        stop = False
        if epoch % every == 0 or epoch == epochs:
            gathered = hvd.allgather_object(validator.results(model), name=f"val_{epoch}")
            results = sorted((r for part in gathered for r in part), key=lambda r: r["id"])
            scores = score_results(args.work, results) if rank == 0 else None
            scores = hvd.broadcast_object(scores, root_rank=0, name=f"scores_{epoch}")
            line += f"; validation music {scores['music_ndcg']:.4f} tag {scores['tag_ndcg']:.4f} score {scores['score']:.4f}"
            if scores["score"] > float(best_score.numpy()):
                best_score.assign(scores["score"])
                best_epoch.assign(epoch)
                if rank == 0:
                    managers[1].save(checkpoint_number=epoch)
                    write_json(results, args.out / "validation_results.json")  # the best epoch's, official format
                    write_export(args.out / "export", variables_by_path(model), export_config(config, manifest, epoch, scores))
                    line += " (best)"
            stop = epoch - int(best_epoch.numpy()) >= patience
            if rank == 0:
                with writer.as_default(step=epoch):
                    for name in ("music_ndcg", "tag_ndcg", "score"):
                        tf.summary.scalar(f"validation/{name}", scores[name])
        if rank == 0:
            managers[0].save(checkpoint_number=epoch)
            with writer.as_default(step=epoch):
                for name, value in metrics.items():
                    tf.summary.scalar(f"loss/{name}", value)
                tf.summary.scalar("learning_rate", float(lr))
                tf.summary.scalar("playlists_per_second", throughput)
            writer.flush()
            print(line, flush=True)
        if stop:
            if rank == 0:
                print(f"[dae] early stop: no improvement for {patience} epochs (best {float(best_score.numpy()):.4f} "
                      f"at epoch {int(best_epoch.numpy())})", flush=True)
            break
    # Data parallelism keeps every rank's weights identical; check it rather than assume it.
    checksums = hvd.allgather_object(float(sum(tf.reduce_sum(tf.abs(v)) for v in variables)), name="checksums")
    if rank == 0:
        print(f"[dae] weight checksums by rank: {checksums}", flush=True)
        print(f"[dae] done: best validation score {float(best_score.numpy()):.4f} at epoch {int(best_epoch.numpy())}; "
              f"export in {args.out / 'export'}", flush=True)
    if len(set(checksums)) != 1:
        fail("ranks finished with different weights", rank)
        return 1
    return 0


def checkpoint_variables(model, optimizer, *counters) -> list:
    return list(model.variables) + [optimizer.iterations] + optimizer.m + optimizer.v + list(counters)


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
