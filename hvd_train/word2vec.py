"""Train Word2Vec song, tag and title-piece vectors data-parallel with Horovod.

    horovodrun -np N python hvd_train/word2vec.py --config configs/word2vec.yaml --work WORKDIR --out RUNDIR \
        [--set section.key=value ...]

The shared loop (hvd_train/loop.py): learning rate scaled by world size, state broadcast from rank 0,
rank-0 checkpoints/TensorBoard/export, resume, early stopping, elastic training. Each rank reads its
shards of WORKDIR; the (inputs, target, negatives) examples are drawn on the fly in tf.data
(data/pipeline.py, mode word2vec). The tables' gradients are ``tf.IndexedSlices`` of the rows a batch
touched, allgathered by Horovod (``hardware.sparse_as_dense: true`` allreduces them densely instead).
Validation scores the tuning questions with the official nDCG: a question's mean input vector against
every song's and tag's output vector, plus the log of the negatives' distribution (models/word2vec.py).
The export (RUNDIR/export) holds the tables, the unit-length input vectors (``unit_inputs``, what
``python -m inference.similar`` reads) and the vocabulary and tokenizer hashes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.vocab import item_counts
from data.workdir import export_identity
from hvd_train.common import Validator, seed_dropout, steps_per_epoch, trainer_parser
from hvd_train.config import TrainerConfig, as_dict
from hvd_train.driver import run
from hvd_train.loop import Task, start
from models.word2vec import Word2VecConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "word2vec.yaml"


def parse_args(argv):
    return trainer_parser("hvd_train/word2vec.py", __doc__.split("\n\n")[0], DEFAULT_CONFIG).parse_args(argv)


@dataclass(frozen=True)
class Word2VecTrainerConfig(TrainerConfig):
    """configs/word2vec.yaml, typed."""
    model: Word2VecConfig


def check_config(raw: dict) -> Word2VecTrainerConfig:
    """configs/word2vec.yaml's mapping (after overrides) typed and checked; ConfigError otherwise."""
    return Word2VecTrainerConfig.parse(raw)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = start(args.config, args.set, args.work, check_config)
    if isinstance(started, int):
        return started
    hvd, config, manifest = started
    return run(hvd, word2vec_task(hvd, config, manifest, args.work), config, manifest, args.work, args.out)


def word2vec_task(hvd, config: Word2VecTrainerConfig, manifest: dict, work: Path) -> Task:
    """Word2Vec, its loss, this rank's batches and validation, for the shared loop (and bench.comm)."""
    import tensorflow as tf

    from data.pipeline import training_dataset
    from models.word2vec import Word2Vec

    train = config.train
    tf.random.set_seed(train.seed)
    vocab = json.loads((work / "vocab.json").read_text(encoding="utf-8"))
    model = Word2Vec.from_config(config.model, manifest["sizes"], item_counts(vocab))
    seed_dropout(train.seed, hvd.rank())  # no dropout here; kept so every trainer seeds alike

    def shard(rank, size):
        """What depends on this rank's place among `size` ranks (rebuilt when an elastic world changes)."""
        batch_size = config.per_rank_batch(size)
        steps = steps_per_epoch(manifest, size, batch_size, train.steps_per_epoch)
        validator = Validator(work, rank, size, config.validation.batch_size,
                              predict=lambda b: model.recommend_logits(b["songs"], b["tags"], b["title"]))

        def batches(epoch):
            return training_dataset(work, "word2vec", rank, size, epoch, batch_size, seed=train.seed,
                                    shuffle_buffer=train.shuffle_buffer, interleave_cycle=train.interleave_cycle,
                                    interleave_block=train.interleave_block, word2vec=config.model).repeat().take(steps)

        return {"batches": batches, "steps": steps, "batch_size": batch_size,
                "validate": lambda: validator.gather_and_score(hvd)}

    return Task(name="word2vec", model=model, variables=list(model.trainable_variables),
                loss=lambda batch, epoch: model.loss(batch), **shard(hvd.rank(), hvd.size()), hidden=config.model.dim,
                reshard=shard, export=lambda epoch, scores: export_config(config, manifest, epoch, scores),
                describe=lambda s: f"music {s['music_ndcg']:.4f} tag {s['tag_ndcg']:.4f} score {s['score']:.4f}",
                export_weights=export_weights)


def export_weights(model) -> dict:
    """What the export holds: the model's variables (what the ensemble member scores with) and the input
    vectors scaled to unit length, ``unit_inputs`` (cosine similarity is then a dot product)."""
    from models.weights import weights_by_path
    from models.word2vec import normalised

    return {**weights_by_path(model), "unit_inputs": normalised(model.inputs.numpy())}


def export_config(config: Word2VecTrainerConfig, manifest: dict, epoch: int, scores: dict) -> dict:
    """The export's config.json: the model section, the work directory's sizes and hashes, the epoch and its
    validation scores, and the whole config."""
    return {
        "model": "word2vec",
        "model_config": as_dict(config.model),
        "sizes": manifest["sizes"],
        **export_identity(manifest),
        "epoch": epoch,
        "validation": {k: scores[k] for k in ("music_ndcg", "tag_ndcg", "score", "popularity_score") if k in scores},
        "trained_with": config.as_dict(),
    }


if __name__ == "__main__":
    sys.exit(main())
