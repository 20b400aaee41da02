"""Train the title BERT data-parallel with Horovod: MLM pretraining, then fine-tuning to songs and tags.

    horovodrun -np N python hvd_train/title.py pretrain --config configs/title.yaml --work WORKDIR --out RUNDIR
    horovodrun -np N python hvd_train/title.py finetune --config configs/title.yaml --work WORKDIR \
        --init PRETRAIN_RUNDIR --out RUNDIR [--set section.key=value ...]

The Horovod machinery is the DAE trainer's (hvd_train/loop.py): warmup scaled by world size, state
broadcast from rank 0, rank-0 checkpoints/TensorBoard/export, resume, early stopping, and elastic training
under horovodrun's --min-np/--max-np/--host-discovery-script (hvd_train/elastic.py).

* pretrain: masked-piece prediction on the training titles (15% of pieces, 80/10/10), softmax
  cross-entropy with label smoothing 0.1; validated by masked-piece loss and accuracy on the validation
  questions' titles (the score is the accuracy).
* finetune: starts from the pretrained encoder and piece/position embeddings (``--init``: a pretrain run
  directory; a clear error when its shapes differ), fresh optimizer and warmup; playlists with an empty
  normalised title are skipped; BCE songs + 0.15 tags; validated with the official nDCG on the
  title-only validation questions (omit ``--init`` to fine-tune from scratch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hvd_train import elastic
from hvd_train.common import (SECTIONS, ConfigError, Validator, check_trainer_config, compute_dtype, fail, per_rank_batch,
                              seed_dropout, steps_per_epoch)
from hvd_train.loop import Task, run, start
from models.export import read_export

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "title.yaml"
PRETRAINED = ("pieces", "positions", "piece_bias", "encoder/")  # what fine-tuning takes from pretraining


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="hvd_train/title.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["pretrain", "finetune"])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--work", type=Path, required=True, help="work directory written by data.preprocess")
    parser.add_argument("--out", type=Path, required=True, help="run directory (created; reused to resume)")
    parser.add_argument("--init", type=Path, help="finetune: a pretrain run directory to start from")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser.parse_args(argv)


def check_config(config: dict) -> None:
    def mask_rate(config):
        if not 0 < float(config["pretrain"]["mask_rate"]) < 1:
            raise ConfigError("pretrain.mask_rate must be between 0 and 1")

    check_trainer_config(config, ("hidden", "blocks", "heads", "ffn", "max_length"), extra=mask_rate,
                         sections=SECTIONS + ("pretrain",))


def load_pretrained(model, init: Path, manifest: dict) -> str | None:
    """Copy the pretrained embeddings and encoder into ``model``; an error message when they do not fit
    (another kind of run, another tokenizer than this work directory's, other shapes)."""
    from models.weights import assign_weights, variables_by_path

    export = init / "export"
    if not (export / "weights.npz").is_file():
        return f"{init}: no export/weights.npz (is it a finished pretrain run directory?)"
    weights, config = read_export(export)
    if config.get("model") != "title_pretrain":
        return f"{init}: its export is a {config.get('model')!r} model, not a title pretraining run"
    ours = manifest["files"]["title.model"]["sha256"]
    if config.get("tokenizer_sha256") != ours:  # same piece count, other pieces: the shapes would agree
        return (f"{init}: pretrained with another tokenizer (title.model sha256 {config.get('tokenizer_sha256')}) "
                f"than this work directory's ({ours}); pretrain on this work directory")
    problem = assign_weights(model, weights, [name for name in variables_by_path(model) if name.startswith(PRETRAINED)])
    if problem:
        return f"{init}: {problem}; pretrain and fine-tune with the same model config and work directory"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage == "pretrain" and args.init:
        return fail("--init is for finetune")
    started = start(args.config, args.set, args.work, check_config)
    if isinstance(started, int):
        return started
    hvd, config, manifest, _ = started  # the per-rank batch: shard() below
    import tensorflow as tf

    from data.pipeline import eval_dataset, training_dataset
    from data.title import TitleTokenizer
    from models.title import TitleBERT, finetune_loss, mlm_loss

    rank, size = hvd.rank(), hvd.size()
    train_cfg, model_cfg, val_cfg = config["train"], config["model"], config["validation"]
    sizes = manifest["sizes"]
    tokenizer = TitleTokenizer(args.work / "title.model")
    tf.random.set_seed(int(train_cfg["seed"]))
    model = TitleBERT.from_config(model_cfg, sizes, tokenizer, compute_dtype(config))
    seed_dropout(int(train_cfg["seed"]), rank)
    if args.stage == "finetune" and args.init:
        # Elastic mode: every worker checks for itself (no collective call before hvd.elastic.run).
        problem = load_pretrained(model, args.init, manifest) if rank == 0 or elastic.enabled() else None
        if not elastic.enabled():
            problem = hvd.broadcast_object(problem, root_rank=0, name="init")
        if problem:
            return fail(problem, rank)  # the pretrained weights reach every rank with the loop's broadcast
    mode = "title_mlm" if args.stage == "pretrain" else "title_finetune"
    loss_cfg = config["loss"]
    rank_from = int(loss_cfg["rank_from_epoch"]) if args.stage == "finetune" and loss_cfg["rank_weight"] else None

    if args.stage == "pretrain":
        smoothing = float(config["pretrain"]["label_smoothing"])
        variables = [v for v in model.trainable_variables if not v.name.startswith("output")]  # fine-tuning head only

        def predicted_pieces(batch, training=False):
            """(logits, labels) at the chosen pieces only."""
            positions = batch["title_positions"]
            return (model.mlm_logits(batch["title_in"], training, positions=positions),
                    model.mlm_labels(batch["title_labels"], positions))

        def loss(batch, epoch):
            value, accuracy = mlm_loss(*predicted_pieces(batch, training=True), smoothing)
            return value, {"mlm": value, "accuracy": accuracy}

        def make_validate(rank, size):
            validation_titles = eval_dataset(args.work, int(val_cfg["batch_size"]), rank, size).unbatch().filter(
                lambda r: tf.reduce_any(r["title"] >= 0)).map(
                lambda r: {"id": r["id"], "title": tf.boolean_mask(r["title"], r["title"] >= 0)})
            return lambda: validate(validation_titles)

        def validate(validation_titles):
            from data.pipeline import PAD, title_masking

            masked = validation_titles.map(lambda r: title_masking(
                r, tf.stack([tf.constant(int(config["pretrain"]["validation_seed"]), tf.int64), r["id"]]), tokenizer.mask_id, tokenizer.first_piece_id,
                tokenizer.size, float(config["pretrain"]["mask_rate"]))).padded_batch(
                int(val_cfg["batch_size"]), padding_values={"id": tf.constant(PAD, tf.int64), "title_in": PAD, "title_labels": PAD,
                                                            "title_positions": PAD})
            total = {"loss": 0.0, "correct": 0.0, "chosen": 0.0}
            for batch in masked:
                logits, labels = predicted_pieces(batch)
                value, accuracy = mlm_loss(logits, labels, smoothing)
                chosen = float(tf.reduce_sum(tf.cast(labels >= 0, tf.float32)))
                total["loss"] += float(value) * chosen
                total["correct"] += float(accuracy) * chosen
                total["chosen"] += chosen
            summed = hvd.allreduce(tf.constant([total["loss"], total["correct"], total["chosen"]], tf.float64), op=hvd.Sum,
                                   name="mlm_validation").numpy()
            chosen = max(summed[2], 1.0)
            return {"mlm_loss": summed[0] / chosen, "accuracy": summed[1] / chosen, "score": summed[1] / chosen}, None

        describe = lambda s: f"masked-piece loss {s['mlm_loss']:.4f} accuracy {s['accuracy']:.4f}"  # noqa: E731
        name = "title_pretrain"
    else:
        variables = [v for v in model.trainable_variables if not v.name.startswith("piece_bias")]  # MLM head only

        def loss(batch, epoch):
            rank_weight = float(loss_cfg["rank_weight"]) if rank_from and epoch >= rank_from else 0.0
            return finetune_loss(model, batch, loss_cfg["item_loss"], float(loss_cfg["tag_weight"]), rank_weight,
                                 rank_k=int(loss_cfg["rank_k"]))

        title_only = lambda b: (tf.reduce_all(b["songs"] < 0, axis=1) & tf.reduce_all(b["tags"] < 0, axis=1)  # noqa: E731
                                & tf.reduce_any(b["title"] >= 0, axis=1))

        def make_validate(rank, size):
            validator = Validator(args.work, rank, size, int(val_cfg["batch_size"]),
                                  predict=lambda b: model.recommend_logits(b["title"]), keep=title_only)
            return lambda: validator.gather_and_score(hvd)

        describe = lambda s: (f"title-only questions: music {s['music_ndcg']:.4f} tag {s['tag_ndcg']:.4f} "  # noqa: E731
                              f"score {s['score']:.4f} (n={s['n']})")
        name = "title_finetune"

    def export(epoch, scores):
        return {"model": name, "model_config": model_cfg, "sizes": sizes,
                "special_ids": {"songs_cls": tokenizer.songs_cls_id, "tags_cls": tokenizer.tags_cls_id,
                                "sep": tokenizer.sep_id, "pad": tokenizer.pad_id, "mask": tokenizer.mask_id},
                "vocab_sha256": manifest["files"]["vocab.json"]["sha256"],
                "tokenizer_sha256": manifest["files"]["title.model"]["sha256"],
                "initialised_from": str(args.init) if args.init else None,
                "epoch": epoch, "validation": {k: v for k, v in scores.items() if isinstance(v, float)},
                "trained_with": config}

    def shard(rank, size):
        """What depends on this rank's place among `size` ranks (rebuilt when an elastic world changes)."""
        batch_size = per_rank_batch(train_cfg, size)
        steps = steps_per_epoch(manifest, size, batch_size, train_cfg.get("steps_per_epoch"), stage="title")

        def batches(epoch):
            return training_dataset(args.work, mode, rank, size, epoch, batch_size, seed=int(train_cfg["seed"]),
                                    shuffle_buffer=int(train_cfg["shuffle_buffer"]),
                                    interleave_cycle=int(train_cfg["interleave_cycle"]),
                                    interleave_block=int(train_cfg["interleave_block"]),
                                    mask_rate=float(config["pretrain"]["mask_rate"])).repeat().take(steps)

        return {"batches": batches, "steps": steps, "batch_size": batch_size, "validate": make_validate(rank, size)}

    task = Task(name=name, model=model, variables=variables, loss=loss, **shard(rank, size),
                hidden=int(model_cfg["hidden"]), export=export, describe=describe, reshard=shard,
                loss_variants=lambda epoch: bool(rank_from and epoch >= rank_from))
    return run(hvd, task, config, manifest, args.work, args.out)


if __name__ == "__main__":
    sys.exit(main())
