"""Train the mel-spectrogram CNN (a song's tags and genres from its audio) data-parallel with Horovod.

    horovodrun -np N python hvd_train/cnn.py --config configs/cnn.yaml --work WORKDIR --out RUNDIR \
        [--set section.key=value ...]

WORKDIR must hold mel shards (``data.preprocess --mel MELDIR``, data/mel_records.py). The shared loop
(hvd_train/loop.py): learning rate scaled by world size, state broadcast from rank 0, rank-0
checkpoints/TensorBoard/export, resume, early stopping, elastic training. Each rank reads its
``mel_train`` shards, a random time crop of every song per epoch (data/pipeline.py
``mel_training_dataset``). Validation scores the ``mel_holdout`` songs, which no step trains on: the
mean nDCG@10 of the CNN's top 10 tags against each song's label tags (the official nDCG formula,
data/ndcg.py), and the share of songs whose top genre is one of theirs. The export (RUNDIR/export)
holds the weights, the tag and genre vocabularies' hashes and the model section;
``python -m inference.audio`` turns it into every song's audio embedding and predicted tags.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.task import ndcg
from data.workdir import export_identity
from hvd_train.common import compute_dtype, fail, seed_dropout, steps_per_epoch, trainer_parser
from hvd_train.config import TrainerConfig, as_dict
from hvd_train.driver import run
from hvd_train.loop import Task, start
from models.cnn import CNNConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "cnn.yaml"


def parse_args(argv):
    return trainer_parser("hvd_train/cnn.py", __doc__.split("\n\n")[0], DEFAULT_CONFIG).parse_args(argv)


@dataclass(frozen=True)
class CNNTrainerConfig(TrainerConfig):
    """configs/cnn.yaml, typed."""
    model: CNNConfig


def check_config(raw: dict) -> CNNTrainerConfig:
    """configs/cnn.yaml's mapping (after overrides) typed and checked; ConfigError otherwise."""
    return CNNTrainerConfig.parse(raw)


def check_workdir(manifest: dict, config: CNNTrainerConfig, size: int, work: Path) -> str | None:
    """Why this work directory cannot train the CNN at ``size`` ranks, or None."""
    if "mel" not in manifest:
        return f"{work} has no mel-spectrogram shards: rerun data.preprocess with --mel MELDIR (data/mel.py)"
    for kind in ("mel_train", "mel_holdout"):
        if len(manifest["shards"][kind]) < size:
            return (f"{work}: {len(manifest['shards'][kind])} {kind} shards cannot feed {size} ranks; rerun "
                    f"data.preprocess with mel.min_shards >= {size}")
    if config.model.crop_frames > manifest["mel"]["frames"]:
        return (f"model.crop_frames={config.model.crop_frames} is longer than the {manifest['mel']['frames']} "
                f"frames the work directory stores per song")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = start(args.config, args.set, args.work, check_config)
    if isinstance(started, int):
        return started
    hvd, config, manifest = started
    problem = check_workdir(manifest, config, hvd.size(), args.work)
    if problem:
        return fail(problem, hvd.rank())
    return run(hvd, cnn_task(hvd, config, manifest, args.work), config, manifest, args.work, args.out)


def cnn_task(hvd, config: CNNTrainerConfig, manifest: dict, work: Path) -> Task:
    """The CNN, its loss, this rank's batches and validation, for the shared loop (and bench.comm)."""
    import tensorflow as tf

    from data.pipeline import mel_training_dataset
    from models.cnn import MelCNN

    train, model_cfg = config.train, config.model
    tf.random.set_seed(train.seed)
    model = MelCNN.from_config(model_cfg, manifest["sizes"]["tags"], len(manifest["mel"]["genres"]),
                               compute_dtype(config.hardware))
    seed_dropout(train.seed, hvd.rank())

    def shard(rank, size):
        """What depends on this rank's place among `size` ranks (rebuilt when an elastic world changes)."""
        batch_size = config.per_rank_batch(size)
        steps = steps_per_epoch(manifest, size, batch_size, train.steps_per_epoch, stage="cnn", kind="mel_train")
        validator = TagValidator(work, rank, size, config.validation.batch_size, model)

        def batches(epoch):
            return mel_training_dataset(work, rank, size, epoch, batch_size, model_cfg.crop_frames, seed=train.seed,
                                        shuffle_buffer=train.shuffle_buffer, interleave_cycle=train.interleave_cycle,
                                        interleave_block=train.interleave_block).repeat().take(steps)

        return {"batches": batches, "steps": steps, "batch_size": batch_size,
                "validate": lambda: validator.gather_and_score(hvd)}

    return Task(name="cnn", model=model, variables=list(model.trainable_variables),
                loss=lambda batch, epoch: model.loss(batch, model_cfg.genre_weight), **shard(hvd.rank(), hvd.size()),
                hidden=model.dim, reshard=shard, export=lambda epoch, scores: export_config(config, manifest, epoch, scores),
                describe=lambda s: f"hold-out tag nDCG@10 {s['tag_ndcg']:.4f} genre hit {s['genre_hit']:.4f}",
                unit="songs")


class TagValidator:
    """This rank's ``mel_holdout`` songs scored: the mean nDCG@10 of the top 10 predicted tags against the
    song's label tags (``score``, ``tag_ndcg``), and the share whose top genre is one of its genres
    (``genre_hit``); the sums are allreduced, so every rank gets the same scores."""

    def __init__(self, work: Path, rank: int, size: int, batch: int, model):
        from data.pipeline import mel_dataset

        self.dataset, self.model = mel_dataset(work, "mel_holdout", batch, rank, size), model

    def sums(self) -> list[float]:
        import numpy as np

        total, hits, count = 0.0, 0.0, 0
        for batch in self.dataset:
            tag_logits, genre_logits = self.model.logits(batch["mel"], batch["genres"])
            top = np.argsort(-tag_logits.numpy(), axis=1, kind="stable")[:, :10]
            best_genre = np.argmax(genre_logits.numpy(), axis=1)
            for row, tags, genres, genre in zip(top, batch["tags"].numpy(), batch["genres"].numpy(), best_genre):
                total += ndcg([t for t in tags.tolist() if t >= 0], row.tolist())
                hits += float(genre in genres)
                count += 1
        return [total, hits, float(count)]

    def gather_and_score(self, hvd) -> tuple[dict, None]:
        import tensorflow as tf

        total, hits, count = hvd.allreduce(tf.constant(self.sums(), tf.float64), op=hvd.Sum, name="cnn_validation").numpy()
        tag_ndcg, genre_hit = total / max(count, 1.0), hits / max(count, 1.0)
        return {"score": tag_ndcg, "tag_ndcg": tag_ndcg, "genre_hit": genre_hit, "songs": int(count)}, None


def export_config(config: CNNTrainerConfig, manifest: dict, epoch: int, scores: dict) -> dict:
    """The export's config.json: the model section, the vocabulary sizes and genre codes, the work
    directory's hashes, the epoch and its validation scores, and the whole config."""
    return {
        "model": "cnn",
        "model_config": as_dict(config.model),
        "sizes": manifest["sizes"],
        "genres": manifest["mel"]["genres"],
        **export_identity(manifest),
        "epoch": epoch,
        "validation": {k: scores[k] for k in ("tag_ndcg", "genre_hit", "score")},
        "trained_with": config.as_dict(),
    }


if __name__ == "__main__":
    sys.exit(main())
