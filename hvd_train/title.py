"""Train the title BERT data-parallel with Horovod: MLM pretraining, then fine-tuning to songs and tags.

    horovodrun -np N python hvd_train/title.py pretrain --config configs/title.yaml --work WORKDIR --out RUNDIR
    horovodrun -np N python hvd_train/title.py finetune --config configs/title.yaml --work WORKDIR \
        --init PRETRAIN_RUNDIR --out RUNDIR [--set section.key=value ...]

The Horovod machinery is the DAE trainer's (hvd_train/loop.py): warmup scaled by world size, state
broadcast from rank 0, rank-0 checkpoints/TensorBoard/export, resume, early stopping, and elastic training
under horovodrun's --min-np/--max-np/--host-discovery-script (hvd_train/elastic.py). The models' losses and
pretraining validation are models/title.py's; each stage here is one function building its Task.

* pretrain: masked-piece prediction on the training titles (15% of pieces, 80/10/10), softmax
  cross-entropy with label smoothing 0.1; validated by masked-piece loss and accuracy on the validation
  questions' titles (the score is the accuracy).
* finetune: starts from the pretrained encoder and piece/position embeddings (``--init``: a pretrain run
  directory; a clear error when its shapes differ), fresh optimizer and warmup; playlists with an empty
  normalised title are skipped; BCE songs + 0.15 tags; validated with the official nDCG on the
  title-only validation questions (omit ``--init`` to fine-tune from scratch).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.workdir import export_identity
from hvd_train.common import (Validator, compute_dtype, elastic_enabled, fail, seed_dropout, steps_per_epoch,
                              trainer_parser)
from hvd_train.config import ConfigError, LossConfig, TrainerConfig, as_dict
from hvd_train.driver import run
from hvd_train.loop import Task, start
from models.export import read_export
from models.title import TitleConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "title.yaml"
PRETRAINED = ("pieces", "positions", "piece_bias", "encoder/")  # what fine-tuning takes from pretraining
STAGES = {"pretrain": ("title_pretrain", "title_mlm"), "finetune": ("title_finetune", "title_finetune")}


def parse_args(argv):
    parser = trainer_parser("hvd_train/title.py", __doc__.split("\n\n")[0], DEFAULT_CONFIG)
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--init", type=Path, help="finetune: a pretrain run directory to start from")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class PretrainConfig:
    mask_rate: float  # of the pieces (CLS/SEP never): 80% [mask], 10% random piece, 10% unchanged
    label_smoothing: float
    validation_seed: int  # the masking of the validation titles: the same pieces masked at every validation

    def __post_init__(self):
        if not 0 < self.mask_rate < 1:
            raise ConfigError("pretrain.mask_rate must be between 0 and 1")


@dataclass(frozen=True)
class TitleTrainerConfig(TrainerConfig):
    """configs/title.yaml, typed: both stages read it (pretrain the ``pretrain`` section, finetune ``loss``)."""
    model: TitleConfig
    loss: LossConfig  # fine-tuning's
    pretrain: PretrainConfig


def check_config(raw: dict) -> TitleTrainerConfig:
    """configs/title.yaml's mapping (after overrides) typed and checked; ConfigError otherwise."""
    return TitleTrainerConfig.parse(raw)


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
    hvd, config, manifest = started
    import tensorflow as tf

    from data.title import TitleTokenizer
    from models.title import TitleBERT

    rank = hvd.rank()
    tokenizer = TitleTokenizer(args.work / "title.model")
    tf.random.set_seed(config.train.seed)
    model = TitleBERT.from_config(config.model, manifest["sizes"], tokenizer, compute_dtype(config.hardware))
    seed_dropout(config.train.seed, rank)
    if args.init:
        # Elastic mode: every worker checks for itself (no collective call before hvd.elastic.run).
        problem = load_pretrained(model, args.init, manifest) if rank == 0 or elastic_enabled() else None
        if not elastic_enabled():
            problem = hvd.broadcast_object(problem, root_rank=0, name="init")
        if problem:
            return fail(problem, rank)  # the pretrained weights reach every rank with the loop's broadcast
    stage = pretrain_task if args.stage == "pretrain" else finetune_task
    task = stage(hvd, model, tokenizer, config, manifest, args)
    return run(hvd, task, config, manifest, args.work, args.out)


def pretrain_task(hvd, model, tokenizer, config: TitleTrainerConfig, manifest: dict, args) -> Task:
    """Masked-piece prediction; validated by masked-piece loss and accuracy (the score) on validation titles."""
    import tensorflow as tf

    from data.pipeline import masked_validation_titles
    from models.title import mlm_sums, pretrain_loss

    smoothing = config.pretrain.label_smoothing

    def make_validate(rank, size):
        titles = masked_validation_titles(args.work, config.validation.batch_size, rank, size,
                                          config.pretrain.validation_seed, tokenizer.mask_id, tokenizer.first_piece_id,
                                          tokenizer.size, config.pretrain.mask_rate)

        def validate():
            summed = hvd.allreduce(tf.constant(mlm_sums(model, titles, smoothing), tf.float64), op=hvd.Sum,
                                   name="mlm_validation").numpy()
            chosen = max(summed[2], 1.0)
            return {"mlm_loss": summed[0] / chosen, "accuracy": summed[1] / chosen, "score": summed[1] / chosen}, None

        return validate

    reshard = functools.partial(shard, config, manifest, args, "pretrain", make_validate)
    return Task(name="title_pretrain", model=model, loss=lambda batch, epoch: pretrain_loss(model, batch, smoothing),
                variables=[v for v in model.trainable_variables if not v.name.startswith("output")],  # not the
                # fine-tuning head
                hidden=config.model.hidden, reshard=reshard,
                export=functools.partial(export_config, config, manifest, tokenizer, args, "pretrain"),
                describe=lambda s: f"masked-piece loss {s['mlm_loss']:.4f} accuracy {s['accuracy']:.4f}",
                **reshard(hvd.rank(), hvd.size()))


def finetune_task(hvd, model, tokenizer, config: TitleTrainerConfig, manifest: dict, args) -> Task:
    """Songs and tags from the title; validated with the official nDCG on the title-only questions."""
    import tensorflow as tf

    from models.title import finetune_loss

    loss_cfg = config.loss

    def loss(batch, epoch):
        return finetune_loss(model, batch, loss_cfg.item_loss, loss_cfg.tag_weight, loss_cfg.rank_weight_at(epoch),
                             rank_k=loss_cfg.rank_k)

    def title_only(b):
        return (tf.reduce_all(b["songs"] < 0, axis=1) & tf.reduce_all(b["tags"] < 0, axis=1)
                & tf.reduce_any(b["title"] >= 0, axis=1))

    def make_validate(rank, size):
        validator = Validator(args.work, rank, size, config.validation.batch_size,
                              predict=lambda b: model.recommend_logits(b["title"]), keep=title_only)
        return lambda: validator.gather_and_score(hvd)

    reshard = functools.partial(shard, config, manifest, args, "finetune", make_validate)
    return Task(name="title_finetune", model=model, loss=loss,
                variables=[v for v in model.trainable_variables if not v.name.startswith("piece_bias")],  # not the
                # MLM head
                hidden=config.model.hidden, reshard=reshard,
                export=functools.partial(export_config, config, manifest, tokenizer, args, "finetune"),
                describe=lambda s: (f"title-only questions: music {s['music_ndcg']:.4f} tag {s['tag_ndcg']:.4f} "
                                    f"score {s['score']:.4f} (n={s['n']})"),
                loss_variants=lambda epoch: loss_cfg.rank_weight_at(epoch) != 0,
                **reshard(hvd.rank(), hvd.size()))


def shard(config: TitleTrainerConfig, manifest: dict, args, stage: str, make_validate, rank: int, size: int) -> dict:
    """What depends on this rank's place among ``size`` ranks (rebuilt when an elastic world changes):
    the batches, steps per epoch, per-rank batch and ``make_validate(rank, size)``."""
    from data.pipeline import training_dataset

    train, mode = config.train, STAGES[stage][1]
    batch_size = config.per_rank_batch(size)
    steps = steps_per_epoch(manifest, size, batch_size, train.steps_per_epoch, stage="title")

    def batches(epoch):
        return training_dataset(args.work, mode, rank, size, epoch, batch_size, seed=train.seed,
                                shuffle_buffer=train.shuffle_buffer, interleave_cycle=train.interleave_cycle,
                                interleave_block=train.interleave_block,
                                mask_rate=config.pretrain.mask_rate).repeat().take(steps)

    return {"batches": batches, "steps": steps, "batch_size": batch_size, "validate": make_validate(rank, size)}


def export_config(config: TitleTrainerConfig, manifest: dict, tokenizer, args, stage: str, epoch: int,
                  scores: dict) -> dict:
    """The export's config.json: the model section and special ids (what inference and fine-tuning build the
    model from), the work directory's hashes, the epoch and its validation scores, and the whole config."""
    return {"model": STAGES[stage][0], "model_config": as_dict(config.model), "sizes": manifest["sizes"],
            "special_ids": {"songs_cls": tokenizer.songs_cls_id, "tags_cls": tokenizer.tags_cls_id,
                            "sep": tokenizer.sep_id, "pad": tokenizer.pad_id, "mask": tokenizer.mask_id},
            **export_identity(manifest),
            "initialised_from": str(args.init) if args.init else None,
            "epoch": epoch, "validation": {k: v for k, v in scores.items() if isinstance(v, float)},
            "trained_with": config.as_dict()}


if __name__ == "__main__":
    sys.exit(main())
