"""What every Horovod trainer shares: Horovod set-up, the learning-rate schedule, steps per epoch, metric
averaging, and validation scoring (configs: hvd_train/config.py; the loop: hvd_train/loop.py).

Patterns from NVIDIA's DeepLearningExamples TF2 BERT and Horovod's TF2 examples: one process per
device, per-rank thread settings, learning rate scaled by world size, state broadcast from rank 0,
rank 0 alone writes anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from data.melon import load_playlists
from data.ndcg import evaluate
from data.task import SONGS_PER_PLAYLIST, TAGS_PER_PLAYLIST, parts
from models.ranking import ChunkedScores, top_unseen


def trainer_parser(prog: str, description: str, default_config: Path) -> argparse.ArgumentParser:
    """The command line every trainer shares: --config, --work, --out and repeatable --set."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, default=default_config)
    parser.add_argument("--work", type=Path, required=True, help="work directory written by data.preprocess")
    parser.add_argument("--out", type=Path, required=True, help="run directory (created; reused to resume)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser


def compute_dtype(hardware) -> "tf.DType":
    """float16 for the encoders under ``hardware.mixed_precision`` (a HardwareConfig), else float32."""
    import tensorflow as tf

    return tf.float16 if hardware.mixed_precision else tf.float32


def seed_dropout(seed: int, rank: int) -> None:
    """After the model is built from the shared ``seed`` (the same initial weights on every rank, then
    broadcast from rank 0 anyway): reseed TensorFlow with ``seed + rank``, so the dropout ops traced from
    here on draw a stream of their own on each rank instead of the same masks everywhere."""
    import tensorflow as tf

    tf.random.set_seed(seed + rank)


def steps_per_epoch(manifest: dict, size: int, batch: int, cap: int | None = None, stage: str = "dae",
                    kind: str = "train") -> int:
    """The same number of steps on every rank: what the rank with the fewest records of its ``kind`` shards
    that ``stage``'s pipeline keeps ("dae": with a song or tag; "title": with a title; "cnn": every song of
    the mel shards) can fill, so an epoch is one pass, or at most ``cap`` (``train.steps_per_epoch``: shorter
    epochs on a time budget, each on a fresh shuffle)."""
    shards = manifest["shards"][kind]
    fewest = min(sum(s["kept"][stage] for s in shards[rank::size]) for rank in range(size))
    full = max(1, fewest // batch)
    return min(full, cap) if cap else full


# ------------------------------------------------------------------ learning rate
def learning_rate(step, hidden: int, warmup: int, scale: float):
    """scale · d^-0.5 · min(step^-0.5, step · warmup^-1.5), step counted from 1 (works on tensors too)."""
    import tensorflow as tf

    step = tf.cast(tf.maximum(step, 1), tf.float32)
    return scale * hidden ** -0.5 * tf.minimum(tf.math.rsqrt(step), step * warmup ** -1.5)


# ------------------------------------------------------------------ horovod
def elastic_enabled() -> bool:
    """True in a worker started by horovodrun in elastic mode (``--min-np``/``--max-np``/
    ``--host-discovery-script``, which set HOROVOD_ELASTIC=1): no collective call may come before
    ``hvd.elastic.run`` then (hvd_train/driver.py)."""
    return os.environ.get("HOROVOD_ELASTIC", "0") == "1"


# On CPUs a rank that reaches a collective first spins in OpenMPI's progress loop, and Horovod's background
# thread negotiates every millisecond, on the cores the other ranks need (docs/cpu.md): waiting ranks yield
# instead, and negotiate every 5 ms (a CPU step takes 100s of ms).
CPU_POLLING = {"OMPI_MCA_mpi_yield_when_idle": "1", "HOROVOD_CYCLE_TIME": "5"}
# the same variables' values when nobody sets them: OpenMPI's and Horovod's own (a waiting rank spins; 1 ms)
LIBRARY_POLLING = {"OMPI_MCA_mpi_yield_when_idle": "0", "HOROVOD_CYCLE_TIME": "1"}


def polling_defaults(has_gpu: bool) -> dict:
    """The :data:`CPU_POLLING` variables this process sets before ``hvd.init()``: those its environment leaves
    unset (a user's own value wins), in a fixed-size run under mpirun on CPUs. None with GPUs (a step of a few
    ms; NCCL waits on the device), under Gloo, or in elastic runs (hvd_train/elastic.py; docs/cpu.md)."""
    if has_gpu or elastic_enabled() or "OMPI_COMM_WORLD_SIZE" not in os.environ:
        return {}
    return {name: value for name, value in CPU_POLLING.items() if name not in os.environ}


def init_horovod():
    """hvd.init() (after :func:`polling_defaults`), threads split among the node's ranks, one GPU per rank when
    there are GPUs."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    os.environ.update(polling_defaults(bool(gpus)))  # read by MPI_Init and Horovod's start, inside hvd.init()
    hvd.init()
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
    values = {name: os.environ.get(name, value) for name, value in LIBRARY_POLLING.items()}
    polling = f", {values['HOROVOD_CYCLE_TIME']} ms cycle"
    if hvd.mpi_enabled():  # OpenMPI's true values of a bool MCA parameter
        yields = values["OMPI_MCA_mpi_yield_when_idle"].lower() in ("1", "t", "true", "enabled", "yes", "y")
        polling += f", waiting ranks {'yield' if yields else 'spin'}"
    return f"{hvd.size()} ranks on {device}, controller {controller}, allreduce over {collective}{polling}"


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

    Only the questions of the protocol's tuning part (data/task.py) are answered and scored: the
    best epoch and early stopping are choices, and the report part stays untouched by them.
    ``predict(batch) -> (song scores, tag scores)``, each [batch, n_items] logits or models.ranking's
    ChunkedScores (the top 100 taken a chunk of the item table at a time, in memory [batch, chunk]);
    ``keep(batch) -> bool per question`` further picks the questions a model answers (all by default);
    ``max_questions`` keeps only the first tuning questions by id.
    Given songs/tags and songs released after the playlist's update are never recommended.

    The first scoring also answers the same questions by popularity (the vocabulary's order: training
    counts) and reports its score beside the model's as ``popularity_score``: a model that stays below it is
    too thin or too short a training to use (models/export.py ``below_popularity``; inference answers with
    popularity in its place).
    """

    def __init__(self, workdir: Path, rank: int, size: int, batch: int, predict, keep=None,
                 max_questions: int | None = None):
        from data.pipeline import eval_dataset

        vocab = json.loads((Path(workdir) / "vocab.json").read_text(encoding="utf-8"))
        self.workdir, self.predict, self.keep = Path(workdir), predict, keep
        self.tuning_ids = np.array(sorted(parts(load_playlists(self.workdir / "eval/questions.json"))["tune"])[:max_questions])
        self.song_ids = np.array([s for s, _ in vocab["songs"]])
        self.tags = [t for t, _ in vocab["tags"]]
        release = np.load(self.workdir / "release_dates.npz", allow_pickle=False)["release_dates"]
        self.song_release = release[self.song_ids]
        self.dataset = eval_dataset(workdir, batch, rank, size)
        self._answers = self._questions = None  # read once, on rank 0, at the first scoring
        self._popularity_score = None  # popularity's score on the same questions, from the first scoring

    def score(self, results: list[dict]) -> dict:
        """Official nDCG of ``results`` on the validation answers to the questions they answer."""
        if self._answers is None:
            self._answers = load_playlists(self.workdir / "eval/answers.json")
            self._questions = load_playlists(self.workdir / "eval/questions.json")
        answered = {r["id"] for r in results}
        return evaluate([a for a in self._answers if a["id"] in answered], results,
                        [q for q in self._questions if q["id"] in answered])

    def results(self, popularity: bool = False) -> list[dict] | tuple[list[dict], list[dict]]:
        """This rank's answers in the official format; with ``popularity``, also popularity's answers to the
        same questions: (model's, popularity's)."""
        out, popular = [], []
        import tensorflow as tf

        for batch in self.dataset:
            keep = np.isin(batch["id"].numpy(), self.tuning_ids)
            if self.keep is not None:
                keep &= np.asarray(self.keep(batch))
            batch = {k: tf.boolean_mask(v, keep) for k, v in batch.items()}
            if int(batch["id"].shape[0]) == 0:
                continue
            out.extend(self._official(batch, *self.predict(batch)))
            if popularity:  # the vocabulary is in count order: a score falling with the index ranks by count
                rows = int(batch["id"].shape[0])
                by_count = ChunkedScores(lambda start, stop: np.broadcast_to(
                    -np.arange(start, stop, dtype=np.float32), (rows, stop - start)), len(self.song_ids), 16384)
                popular.extend(self._official(batch, by_count, np.broadcast_to(
                    -np.arange(len(self.tags), dtype=np.float32), (rows, len(self.tags)))))
        return (out, popular) if popularity else out

    def _official(self, batch: dict, song_scores, tag_scores) -> list[dict]:
        """Official-format answers to a batch's questions from their song and tag scores ([B, n] or
        ChunkedScores): the top 100 songs released by the question's update date and top 10 tags, none
        given; a question with fewer allowed songs is filled up with the most frequent others, so that every
        answer has exactly 100 songs and 10 tags, as the official evaluator requires."""
        days = batch["updt_date"].numpy()[:, None]
        songs = top_unseen(song_scores, batch["songs"].numpy(),
                           lambda start, stop: self.song_release[None, start:stop] > days, SONGS_PER_PLAYLIST)
        tags = top_unseen(tag_scores, batch["tags"].numpy(), None, TAGS_PER_PLAYLIST)
        return [{"id": int(pid), "songs": self.song_ids[_filled(s, len(self.song_ids))].tolist(),
                 "tags": [self.tags[i] for i in _filled(t, len(self.tags))]}
                for pid, s, t in zip(batch["id"].numpy(), songs, tags)]

    def gather_and_score(self, hvd) -> tuple[dict, list[dict]]:
        """Every rank's results gathered, scored once on rank 0, the scores broadcast (collective calls).
        Popularity's answers are gathered and scored at the first scoring only, rank 0 deciding which one
        that is (after an elastic world change some workers hold a new Validator and others an old one)."""
        first = hvd.broadcast_object(self._popularity_score is None, root_rank=0, name="validation_first")
        gathered = hvd.allgather_object(self.results(popularity=first), name="validation")
        parts = [part[0] for part in gathered] if first else gathered
        results = sorted((r for part in parts for r in part), key=lambda r: r["id"])
        scores = self.score(results) if hvd.rank() == 0 else None
        if hvd.rank() == 0:
            scores["popularity_score"] = (self.score([r for part in gathered for r in part[1]])["score"] if first
                                          else self._popularity_score)
        scores = hvd.broadcast_object(scores, root_rank=0, name="scores")
        self._popularity_score = scores["popularity_score"]
        return scores, results


def _filled(indices: np.ndarray, n: int) -> np.ndarray:
    """A row of top-k indices (-1: none allowed) with its -1s replaced by the first other indices of [0, n):
    the most frequent items, the vocabulary being in count order."""
    chosen = indices[indices >= 0]
    if len(chosen) == len(indices):
        return chosen
    others = np.setdiff1d(np.arange(min(n, len(indices) + len(chosen))), chosen, assume_unique=False)
    return np.concatenate([chosen, others[: len(indices) - len(chosen)]])
