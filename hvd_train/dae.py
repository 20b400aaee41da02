"""Train the DAE data-parallel with Horovod.

    horovodrun -np N python hvd_train/dae.py --config configs/dae.yaml --work WORKDIR --out RUNDIR \
        [--set section.key=value ...]

Every rank reads its own shards of WORKDIR (data/pipeline.py), gradients are averaged with
Horovod's allreduce (hvd_train/loop.py), the learning rate follows the Transformer warmup schedule scaled by
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

import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.workdir import export_identity
from hvd_train.common import Validator, compute_dtype, seed_dropout, steps_per_epoch, trainer_parser
from hvd_train.config import (ConfigError, LossConfig, TrainConfig, TrainerConfig, ValidationConfig, as_dict, positive,
                              probability)
from hvd_train.driver import run
from hvd_train.loop import Task, start
from models.dae import TARGETS, DAEConfig

OUTPUTS = ("full", "sampled")
OUTPUT_INITS = ("random", "popularity")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "dae.yaml"


def parse_args(argv):
    return trainer_parser("hvd_train/dae.py", __doc__.split("\n\n")[0], DEFAULT_CONFIG).parse_args(argv)


@dataclass(frozen=True)
class DAETrainConfig(TrainConfig):
    max_songs: int  # the corruption keeps at most this many songs and max_tags tags of a playlist
    max_tags: int
    title_keep: float  # with model.title: the title stays in the input with this probability ...
    title_only: float  # ... and a kept title is the whole input with this one
    output_init: str  # random | popularity: the output heads start ranking by popularity (DAE.start_from_popularity)

    def __post_init__(self):
        super().__post_init__()
        if self.max_songs <= 0 or self.max_tags <= 0:
            raise ConfigError("train.max_songs and train.max_tags must be positive")
        if self.output_init not in OUTPUT_INITS:
            raise ConfigError(f"train.output_init must be one of {list(OUTPUT_INITS)}")
        probability(self, "title_keep", "title_only", name="train")


@dataclass(frozen=True)
class DAELossConfig(LossConfig):
    artist_weight: float
    targets: str  # all | hidden
    output: str  # full: every item scored each step | sampled: the batch's items + `negatives` sampled ones
    negatives: int  # sampled: negatives per step and head, shared by the batch, drawn from counts^sample_alpha
    sample_alpha: float

    def __post_init__(self):
        super().__post_init__()
        if self.targets not in TARGETS:
            raise ConfigError(f"loss.targets must be one of {list(TARGETS)}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"loss.output must be one of {list(OUTPUTS)}")
        if self.output == "sampled" and self.item_loss != "softmax":
            raise ConfigError("loss.output=sampled needs loss.item_loss=softmax (a sampled softmax)")
        if self.negatives <= 0 or not 0.0 <= self.sample_alpha <= 1.0:
            raise ConfigError("loss.negatives must be positive and loss.sample_alpha in [0, 1]")


@dataclass(frozen=True)
class DAEValidationConfig(ValidationConfig):
    max_questions: int | None  # score at most this many tuning questions (the first by id); null: all
    score_chunk: int  # songs scored at a time for each question's top 100 (memory [batch_size, score_chunk])

    def __post_init__(self):
        super().__post_init__()
        positive(self, "max_questions", "score_chunk", name="validation")


@dataclass(frozen=True)
class DAETrainerConfig(TrainerConfig):
    """configs/dae.yaml, typed."""
    model: DAEConfig
    train: DAETrainConfig
    loss: DAELossConfig
    validation: DAEValidationConfig


def check_config(raw: dict) -> DAETrainerConfig:
    """configs/dae.yaml's mapping (after overrides) typed and checked; ConfigError otherwise."""
    return DAETrainerConfig.parse(raw)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = start(args.config, args.set, args.work, check_config)
    if isinstance(started, int):
        return started
    hvd, config, manifest = started
    return run(hvd, dae_task(hvd, config, manifest, args.work), config, manifest, args.work, args.out)


def dae_task(hvd, config: DAETrainerConfig, manifest: dict, work: Path) -> Task:
    """The DAE, its loss, this rank's batches and validation, for the shared loop (and bench.comm)."""
    import tensorflow as tf

    from data.pipeline import training_dataset
    from models.dae import DAE, dae_loss

    rank, size = hvd.rank(), hvd.size()
    train, model_cfg, loss_cfg = config.train, config.model, config.loss

    tf.random.set_seed(train.seed)
    model = DAE.from_config(model_cfg, manifest["sizes"], compute_dtype(config.hardware))
    vocab = json.loads((Path(work) / "vocab.json").read_text(encoding="utf-8"))
    counts = vocab_counts(vocab)
    model.set_song_artists(vocab["song_artists"], counts["songs"])
    if train.output_init == "popularity":
        model.start_from_popularity(counts, manifest["records"]["train"])
    seed_dropout(train.seed, rank)

    sampler = output_sampler(counts, manifest, loss_cfg, config.per_rank_batch(size))

    def loss(batch, epoch):
        return dae_loss(model, batch, loss_cfg.tag_weight, loss_cfg.artist_weight, loss_cfg.rank_weight_at(epoch),
                        training=True, item_loss=loss_cfg.item_loss, targets=loss_cfg.targets, rank_k=loss_cfg.rank_k,
                        sampler=sampler)

    def shard(rank, size):
        """What depends on this rank's place among `size` ranks (rebuilt when an elastic world changes)."""
        batch_size = config.per_rank_batch(size)
        steps = steps_per_epoch(manifest, size, batch_size, train.steps_per_epoch)
        validator = Validator(work, rank, size, config.validation.batch_size,
                              predict=lambda b: validation_scores(model, b, config.validation.score_chunk),
                              max_questions=config.validation.max_questions)

        def batches(epoch):
            return training_dataset(work, "dae", rank, size, epoch, batch_size, seed=train.seed,
                                    shuffle_buffer=train.shuffle_buffer, interleave_cycle=train.interleave_cycle,
                                    interleave_block=train.interleave_block, max_songs=train.max_songs,
                                    max_tags=train.max_tags, title_keep=train.title_keep if model_cfg.title else 0.0,
                                    title_only=train.title_only).repeat().take(steps)

        return {"batches": batches, "steps": steps, "batch_size": batch_size,
                "validate": lambda: validator.gather_and_score(hvd)}

    return Task(
        name="dae", model=model, variables=list(model.trainable_variables), loss=loss, **shard(rank, size),
        hidden=model_cfg.hidden, reshard=shard,
        decayed=[v for v in (model.embedding, model.output_table, model.artist_table) if v is not None],
        export=lambda epoch, scores: export_config(config, manifest, epoch, scores),
        describe=lambda s: f"music {s['music_ndcg']:.4f} tag {s['tag_ndcg']:.4f} score {s['score']:.4f}",
        loss_variants=lambda epoch: loss_cfg.rank_weight_at(epoch) != 0,
        row_updates=sampler is not None and not config.hardware.sparse_as_dense,
    )


def validation_scores(model, batch: dict, chunk: int):
    """(songs as ChunkedScores, ``chunk`` songs at a time; tag logits [batch, n_tags]) for a validation batch:
    the songs-CLS output scored against the song table a slice at a time, never [batch, n_songs] at once."""
    import tensorflow as tf

    h = model.encode(batch["songs"], batch["tags"], batch["artists"], batch["title"], training=False)
    return model.chunked_scores(h, 0, chunk), model.score(h, 1, tf.range(model.sizes[1]))


def output_sampler(counts: dict, manifest: dict, loss_cfg: DAELossConfig, batch_size: int):
    """loss.output=sampled: the sampling state of the heads larger than loss.negatives, from the vocabulary's
    training ``counts`` (vocab_counts); None for the full output."""
    if loss_cfg.output != "sampled":
        return None
    from models.sampled import SampledOutput

    return SampledOutput(counts, manifest["records"]["train"], batch_size, loss_cfg.negatives, loss_cfg.sample_alpha)


def vocab_counts(vocab: dict) -> dict:
    """{songs, tags, artists: [training count of each vocabulary item]} of a vocab.json (data/vocab.py)."""
    from models.dae import HEADS

    return {kind: [count for _, count in vocab[kind]] for kind in HEADS}


def export_config(config: DAETrainerConfig, manifest: dict, epoch: int, scores: dict) -> dict:
    """The export's config.json: the model section (what inference builds the model from), the work
    directory's sizes and hashes, the epoch and its validation scores, and the whole config."""
    return {
        "model": "dae",
        "model_config": as_dict(config.model),
        "sizes": manifest["sizes"],
        **export_identity(manifest),
        "epoch": epoch,
        "validation": {k: scores[k] for k in ("music_ndcg", "tag_ndcg", "score", "popularity_score") if k in scores},
        "trained_with": config.as_dict(),
    }


if __name__ == "__main__":
    sys.exit(main())
