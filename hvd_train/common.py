"""What every Horovod trainer shares: config with overrides, Horovod set-up, the learning-rate schedule,
rank-0 checkpoints/TensorBoard/exports, metric averaging, and validation scoring.

Patterns from NVIDIA's DeepLearningExamples TF2 BERT and Horovod's TF2 examples: one process per
device, per-rank thread settings, learning rate scaled by world size, state broadcast from rank 0,
rank 0 alone writes anything.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import yaml

from models.ranking import top_unseen


class ConfigError(ValueError):
    """A config file or override that does not fit the config's keys or types."""


# ------------------------------------------------------------------ config
def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """The YAML config with ``section.key=value`` overrides; unknown keys and wrong types are ConfigError."""
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    defaults = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        *sections, leaf = key.split(".")
        node, default = config, defaults
        for section in sections:
            if not isinstance(node.get(section), dict):
                raise ConfigError(f"override {item!r}: no section {section!r} in {path}")
            node, default = node[section], default[section]
        if leaf not in node:
            raise ConfigError(f"override {item!r}: no key {leaf!r} in section {'.'.join(sections) or '(top)'} of {path}; "
                              f"known keys: {', '.join(sorted(node))}")
        value = yaml.safe_load(raw)
        if default[leaf] is not None and value is not None and not _same_kind(default[leaf], value):
            raise ConfigError(f"override {item!r}: expected {type(default[leaf]).__name__} like {default[leaf]!r}")
        node[leaf] = value
    return config


def _same_kind(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


SECTIONS = ("model", "loss", "train", "validation", "checkpoint", "hardware", "elastic", "faults")


def check_trainer_config(config: dict, model_keys: tuple, extra=None, sections: tuple = SECTIONS) -> None:
    """The checks every trainer's config needs (its ``sections`` all present, positive sizes, known activation
    and scaling); ``extra(config)`` adds a model's own. Any missing or malformed value is a ConfigError."""
    missing = [s for s in sections if not isinstance(config.get(s), dict)]
    if missing:
        raise ConfigError(f"the config has no section {', '.join(map(repr, missing))} (every trainer config needs "
                          f"{', '.join(sections)}; see configs/)")
    try:
        for section, keys in (("model", model_keys), ("train", ("epochs", "warmup_steps", "batch_size", "interleave_cycle",
                                                                 "interleave_block")),
                              ("validation", ("every_epochs", "patience_epochs", "batch_size"))):
            for key in keys:
                if int(config[section][key]) <= 0:
                    raise ConfigError(f"{section}.{key} must be positive")
        if config["model"]["activation"] not in ("gelu", "relu"):
            raise ConfigError("model.activation must be gelu or relu")
        lr_scale(config["train"], 1)
        if config["hardware"]["gradient_compression"] not in ("none", "fp16"):
            raise ConfigError("hardware.gradient_compression must be none or fp16")
        for key in ("mixed_precision", "xla", "sparse_as_dense"):
            if not isinstance(config["hardware"][key], bool):
                raise ConfigError(f"hardware.{key} must be true or false")
        if float(config["hardware"]["loss_scale_initial"]) < 1 or int(config["hardware"]["loss_scale_growth_steps"]) <= 0:
            raise ConfigError("hardware.loss_scale_initial must be >= 1 and hardware.loss_scale_growth_steps positive")
        if int(config["loss"]["rank_k"]) <= 0:
            raise ConfigError("loss.rank_k must be positive")
        if config["train"].get("steps_per_epoch") is not None and int(config["train"]["steps_per_epoch"]) <= 0:
            raise ConfigError("train.steps_per_epoch must be positive or null")
        if float(config["train"]["weight_decay"]) < 0:
            raise ConfigError("train.weight_decay must be >= 0")
        if int(config["train"]["max_bad_steps"]) <= 0:
            raise ConfigError("train.max_bad_steps must be positive")
        if int(config["elastic"]["commit_every_steps"]) <= 0:
            raise ConfigError("elastic.commit_every_steps must be positive")
        from models.losses import ITEM_LOSSES

        if config["loss"]["item_loss"] not in ITEM_LOSSES:
            raise ConfigError(f"loss.item_loss must be one of {sorted(ITEM_LOSSES)}")
        if extra is not None:
            extra(config)
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"config is missing or has a malformed setting: {e}") from None


def compute_dtype(config: dict):
    """float16 for the encoders under hardware.mixed_precision, else float32."""
    import tensorflow as tf

    return tf.float16 if config["hardware"]["mixed_precision"] else tf.float32


def seed_dropout(seed: int, rank: int) -> None:
    """After the model is built from the shared ``seed`` (the same initial weights on every rank, then
    broadcast from rank 0 anyway): reseed TensorFlow with ``seed + rank``, so the dropout ops traced from
    here on draw a stream of their own on each rank instead of the same masks everywhere."""
    import tensorflow as tf

    tf.random.set_seed(seed + rank)


def per_rank_batch(train: dict, size: int) -> int:
    """The per-rank batch: ``batch_size``, or ``global_batch_size`` split evenly over the ranks."""
    if train.get("global_batch_size"):
        total = int(train["global_batch_size"])
        if total % size:
            raise ConfigError(f"train.global_batch_size={total} does not divide over {size} ranks")
        return total // size
    return int(train["batch_size"])


def steps_per_epoch(manifest: dict, size: int, batch: int, cap: int | None = None, stage: str = "dae") -> int:
    """The same number of steps on every rank: what the rank with the fewest records that ``stage``'s
    pipeline keeps ("dae": with a song or tag; "title": with a title) can fill, so an epoch is one pass, or at
    most ``cap`` (``train.steps_per_epoch``: shorter epochs on a time budget, each on a fresh shuffle)."""
    shards = manifest["shards"]["train"]
    fewest = min(sum(s["kept"][stage] for s in shards[rank::size]) for rank in range(size))
    full = max(1, fewest // batch)
    return min(full, int(cap)) if cap else full


# ------------------------------------------------------------------ learning rate
def lr_scale(train: dict, size: int) -> float:
    """The schedule's factor for ``size`` ranks: ``train.lr_scaling`` (linear, sqrt or none in the ranks)
    times ``train.lr_multiplier``."""
    scaling, multiplier = train["lr_scaling"], float(train["lr_multiplier"])
    if multiplier <= 0:
        raise ConfigError(f"train.lr_multiplier must be positive, got {multiplier}")
    if scaling == "linear":
        return float(size) * multiplier
    if scaling == "sqrt":
        return math.sqrt(size) * multiplier
    if scaling == "none":
        return multiplier
    raise ConfigError(f"train.lr_scaling must be linear, sqrt or none, got {scaling!r}")


def learning_rate(step, hidden: int, warmup: int, scale: float):
    """scale · d^-0.5 · min(step^-0.5, step · warmup^-1.5), step counted from 1 (works on tensors too)."""
    import tensorflow as tf

    step = tf.cast(tf.maximum(step, 1), tf.float32)
    return scale * hidden ** -0.5 * tf.minimum(tf.math.rsqrt(step), step * warmup ** -1.5)


# ------------------------------------------------------------------ horovod
def init_horovod():
    """hvd.init(), threads split among the node's ranks, one GPU per rank when there are GPUs."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    hvd.init()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[hvd.local_rank() % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    return hvd


def describe_horovod(hvd) -> str:
    import tensorflow as tf

    controller = "MPI" if hvd.mpi_enabled() else "Gloo" if hvd.gloo_enabled() else "?"
    collective = "NCCL" if hvd.nccl_built() and tf.config.list_physical_devices("GPU") else controller
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    return f"{hvd.size()} ranks on {device}, controller {controller}, allreduce over {collective}"


def average(hvd, values: dict) -> dict:
    """Each metric averaged over all ranks (one allreduce)."""
    import tensorflow as tf

    names = sorted(values)
    if not names:
        return {}
    averaged = hvd.allreduce(tf.constant([float(values[n]) for n in names]), op=hvd.Average, name="metrics")
    return dict(zip(names, averaged.numpy().tolist()))


def fail(message: str, rank: int | None = None) -> int:
    if rank in (None, 0):
        print(f"error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------ validation scoring
class Validator:
    """Top-100 songs / top-10 tags for this rank's share of the validation questions, in the official format.

    Only the questions of the protocol's tuning part (evaluate/protocol.py) are answered and scored: the
    best epoch and early stopping are choices, and the report part stays untouched by them.
    ``predict(batch) -> (song_logits, tag_logits)``; ``keep(batch) -> bool per question`` further picks the
    questions a model answers (all by default). Given songs/tags and songs released after the playlist's
    update are never recommended.
    """

    def __init__(self, workdir: Path, rank: int, size: int, batch: int, predict, keep=None):
        from data.melon import load_playlists
        from data.pipeline import eval_dataset
        from evaluate.protocol import parts

        vocab = json.loads((Path(workdir) / "vocab.json").read_text(encoding="utf-8"))
        self.workdir, self.predict, self.keep = Path(workdir), predict, keep
        self.tuning_ids = np.array(sorted(parts(load_playlists(self.workdir / "eval/questions.json"))["tune"]))
        self.song_ids = np.array([s for s, _ in vocab["songs"]])
        self.tags = [t for t, _ in vocab["tags"]]
        release = np.load(self.workdir / "release_dates.npz", allow_pickle=False)["release_dates"]
        self.song_release = release[self.song_ids]
        self.dataset = eval_dataset(workdir, batch, rank, size)
        self._answers = self._questions = None  # read once, on rank 0, at the first scoring

    def score(self, results: list[dict]) -> dict:
        """Official nDCG of ``results`` on the validation answers to the questions they answer."""
        from data.melon import load_playlists
        from evaluate.ndcg import evaluate

        if self._answers is None:
            self._answers = load_playlists(self.workdir / "eval/answers.json")
            self._questions = load_playlists(self.workdir / "eval/questions.json")
        answered = {r["id"] for r in results}
        return evaluate([a for a in self._answers if a["id"] in answered], results,
                        [q for q in self._questions if q["id"] in answered])

    def results(self) -> list[dict]:
        out = []
        import tensorflow as tf

        for batch in self.dataset:
            keep = np.isin(batch["id"].numpy(), self.tuning_ids)
            if self.keep is not None:
                keep &= np.asarray(self.keep(batch))
            batch = {k: tf.boolean_mask(v, keep) for k, v in batch.items()}
            if int(batch["id"].shape[0]) == 0:
                continue
            song_logits, tag_logits = self.predict(batch)
            future = self.song_release[None, :] > batch["updt_date"].numpy()[:, None]
            songs = top_unseen(song_logits.numpy(), batch["songs"].numpy(), future, 100)
            tags = top_unseen(tag_logits.numpy(), batch["tags"].numpy(), None, 10)
            for pid, s, t in zip(batch["id"].numpy(), songs, tags):
                out.append({"id": int(pid), "songs": self.song_ids[s].tolist(), "tags": [self.tags[i] for i in t]})
        return out

    def gather_and_score(self, hvd) -> tuple[dict, list[dict]]:
        """Every rank's results gathered, scored once on rank 0, the scores broadcast (a collective call)."""
        gathered = hvd.allgather_object(self.results(), name="validation")
        results = sorted((r for part in gathered for r in part), key=lambda r: r["id"])
        scores = self.score(results) if hvd.rank() == 0 else None
        return hvd.broadcast_object(scores, root_rank=0, name="scores"), results
