"""The ensemble's trained members, declared once: what each is called, the flag that names its run, how it
loads, which questions it answers and how it turns them into probabilities.

``python -m inference``, ``python -m inference.fit_blend`` and ``python -m inference.recommend`` take one
flag per entry of :data:`MEMBERS`; the ensemble (inference/ensemble.py) loads every member given, in this
order, and asks each for its candidates; the blend file weighs them by ``name``; bench.quality runs the
ensemble with all of them, without each, and each alone. Adding a trained member is a models/X.py, a
hvd_train/X.py task, a configs/X.yaml and one :class:`Member` here.

The other members are not trained and have a shape of their own: the neighbour members
(inference/neighbours.py, ``--neighbours``, repeatable, named by their kind), the audio member
(inference/audio_member.py, ``--audio``: songs outside the vocabulary in the tail of a list) and popularity
(always there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from inference.exports import load_dae, load_title, load_word2vec


@dataclass(frozen=True)
class Context:
    """What a member's loader may read: the work directory, its manifest, its vocabulary index
    (data/workdir.py index_of) and its title tokenizer."""
    workdir: Path
    manifest: dict
    index: dict
    tokenizer: object


class Loaded(Protocol):
    """A loaded member: its export's config.json, the questions it answers and its probabilities."""
    config: dict

    def answers(self, given: np.ndarray, has_title: np.ndarray) -> np.ndarray:
        """bool [Q]: which questions it answers, from whether each gives songs or tags (``given``, bool [Q])
        and a non-empty title (``has_title``, bool [Q])."""

    def probabilities(self, records: list[dict]):
        """(songs [Q, n_songs], tags [Q, n_tags]) for work-directory records (data/workdir.py to_record),
        tensors or arrays; the given items need not be masked (the ensemble blocks them)."""


@dataclass(frozen=True)
class Member:
    """One trained member of the ensemble."""
    name: str  # the blend file's key, bench.quality's row ("dae")
    label: str  # its name in logs ("DAE")
    flag: str  # the command-line flag of its run directory ("--dae")
    help: str  # that flag's help
    load: Callable[[Path, Context], Loaded]  # (run directory or export folder, context) -> the loaded member
    folder: str  # its run folder in a quickstart run (launch/quickstart.sh), for bench.quality
    stages: tuple  # quickstart's timings.json keys of its training stages, for bench.quality's train seconds
    description: str  # bench.quality's description of the member alone


def padded(rows: list[list[int]]) -> np.ndarray:
    """int32 [len(rows), max(1, longest)]: the rows padded with -1."""
    out = np.full((len(rows), max(1, max((len(r) for r in rows), default=0))), -1, dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def probabilities(logits, item_loss: str):
    """The model's probabilities (a tensor): a distribution over the items (softmax-trained) or per item
    (BCE-trained)."""
    import tensorflow as tf

    return tf.nn.softmax(logits) if item_loss == "softmax" else tf.sigmoid(logits)


class DAEMember:
    """The DAE (models/dae.py): answers a question that gives songs or tags, or a title when it reads titles."""

    def __init__(self, run: Path, context: Context):
        self.model, self.config = load_dae(run, context.manifest, context.workdir)
        trained = self.config["trained_with"]
        self.max_songs, self.max_tags = int(trained["train"]["max_songs"]), int(trained["train"]["max_tags"])
        self.output = trained["loss"].get("item_loss", "bce")
        self.song_artists = context.index["song_artists"]

    def answers(self, given: np.ndarray, has_title: np.ndarray) -> np.ndarray:
        return given | (has_title & (self.model.piece_offset is not None))

    def probabilities(self, records: list[dict]):
        import tensorflow as tf

        from models.losses import hide_given

        songs = padded([r["songs"][: self.max_songs] for r in records])
        tags = padded([r["tags"][: self.max_tags] for r in records])
        artists = padded([list(dict.fromkeys(a for s in r["songs"][: self.max_songs] for a in self.song_artists[s]))
                          for r in records])
        title = tf.constant(padded([r["title"] for r in records]))
        song_logits, tag_logits = self.model(tf.constant(songs), tf.constant(tags), tf.constant(artists), title,
                                             heads=2)
        # the given items are never an answer: the probabilities are over the rest (every given item, not only
        # the first max_songs the model read)
        song_logits = hide_given(song_logits, tf.constant(padded([r["songs"] for r in records])))
        tag_logits = hide_given(tag_logits, tf.constant(padded([r["tags"] for r in records])))
        return probabilities(song_logits, self.output), probabilities(tag_logits, self.output)


class TitleMember:
    """The fine-tuned title BERT (models/title.py): answers a question with a non-empty title."""

    def __init__(self, run: Path, context: Context):
        self.model, self.config = load_title(run, context.manifest, context.workdir, context.tokenizer)
        self.output = self.config["trained_with"]["loss"].get("item_loss", "bce")

    def answers(self, given: np.ndarray, has_title: np.ndarray) -> np.ndarray:
        return has_title

    def probabilities(self, records: list[dict]):
        import tensorflow as tf

        song_logits, tag_logits = self.model.recommend_logits(tf.constant(padded([r["title"] for r in records])))
        return probabilities(song_logits, self.output), probabilities(tag_logits, self.output)


class Word2VecMember:
    """Word2Vec (models/word2vec.py): answers a question that gives anything; a softmax over the songs and
    over the tags of the question's mean input vector · every output vector."""

    def __init__(self, run: Path, context: Context):
        self.model, self.config = load_word2vec(run, context.manifest, context.workdir)

    def answers(self, given: np.ndarray, has_title: np.ndarray) -> np.ndarray:
        return given | has_title

    def probabilities(self, records: list[dict]):
        import tensorflow as tf

        song_logits, tag_logits = self.model.recommend_logits(
            *(tf.constant(padded([r[k] for r in records])) for k in ("songs", "tags", "title")))
        return tf.nn.softmax(song_logits), tf.nn.softmax(tag_logits)


MEMBERS: tuple[Member, ...] = (
    Member("dae", "DAE", "--dae", "DAE run directory (hvd_train/dae.py --out)", DAEMember, "dae", ("dae",),
           "denoising set autoencoder alone (songs, tags, artists, title pieces)"),
    Member("title", "title BERT", "--title", "fine-tuned title BERT run directory (hvd_train/title.py finetune --out)",
           TitleMember, "title-finetune", ("title_pretrain", "title_finetune"), "title BERT alone (fine-tuned)"),
    Member("word2vec", "Word2Vec", "--word2vec", "Word2Vec run directory (hvd_train/word2vec.py --out)",
           Word2VecMember, "word2vec", ("word2vec",),
           "Word2Vec alone (a question's mean input vector against every output vector)"),
)


def add_flags(parser) -> None:
    """One ``--NAME RUNDIR`` option per member of MEMBERS (argparse dest = the member's name)."""
    for member in MEMBERS:
        parser.add_argument(member.flag, dest=member.name, type=Path, help=member.help)


def runs_of(args) -> dict[str, Path]:
    """{member name: run directory} of the members given on the command line (add_flags' options)."""
    return {m.name: getattr(args, m.name) for m in MEMBERS if getattr(args, m.name, None) is not None}


def given_runs(parser, args) -> dict[str, Path]:
    """runs_of(args); argparse's usage error (exit 2) when neither a trained member nor ``--neighbours`` is
    given."""
    runs = runs_of(args)
    if not runs and not args.neighbours:
        parser.error(f"give at least one of {', '.join([m.flag for m in MEMBERS] + ['--neighbours'])}")
    return runs


def main() -> int:
    """``python -m inference.members``: one line per trained member, ``NAME FLAG FOLDER`` (launch/quickstart.sh
    reads its member flags, run folders and results from it)."""
    for member in MEMBERS:
        print(member.name, member.flag, member.folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
