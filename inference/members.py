"""The ensemble's members, declared once: what each is called, the flag that names its run, how it loads and
how it proposes candidates, its run folder in a quickstart run and its rows in bench.quality.

* The trained members, :data:`MEMBERS` (:class:`Member`): ``python -m inference``, ``python -m
  inference.fit_blend`` and ``python -m inference.recommend`` take one flag per entry; the ensemble
  (inference/ensemble.py) loads every member given, in this order, and asks each which questions it answers
  and its probabilities; the blend file weighs them by ``name``; bench.quality runs the ensemble with all of
  them, without each, and each alone. Adding a trained member is a models/X.py, a hvd_train/X.py task, a
  configs/X.yaml and one :class:`Member` here.
* The neighbour members, :data:`NEIGHBOURS` (:class:`Extra`, one repeatable flag) and
  :data:`NEIGHBOUR_KINDS` (:class:`NeighbourKind`): not trained; inference/neighbours.py builds one run per
  kind, the ensemble loads each run given and names the member by its kind, which proposes candidates
  from the question's songs, tags and title pieces. bench.quality runs the kinds quickstart builds (those
  with a folder) inside the ensemble, all of them left out, and each alone.
* The audio member, :data:`AUDIO` (inference/audio_member.py, ``--audio``): songs outside the vocabulary
  in the tail of a list, as many as the blend file's slots; a run without spectrograms lacks it.
* Popularity, :data:`POPULARITY` (:class:`PopularityMember`): always there, no flag; it proposes the most
  frequent training songs and tags a question may still get, a member of every fitted blend, and stands in
  for a trained member whose export scored below it.

``python -m inference.members`` prints them for launch/quickstart.sh (:func:`main`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from data.task import SONGS_PER_PLAYLIST, TAGS_PER_PLAYLIST
from inference.audio import INDEX_FILE
from inference.audio_member import AudioMember
from inference.blend import Candidates
from inference.exports import load_dae, load_title, load_word2vec
from inference.neighbours import load_neighbours


@dataclass(frozen=True)
class Context:
    """What a member's loader may read: the work directory, its manifest, its vocabulary index
    (data/workdir.py index_of), its title tokenizer and the vocabulary's training counts ({songs, tags}:
    float64 [n_items], vocabulary order)."""
    workdir: Path
    manifest: dict
    index: dict
    tokenizer: object
    counts: dict


class Loaded(Protocol):
    """A loaded member: its export's config.json, the questions it answers and its probabilities."""
    config: dict

    def answers(self, given: np.ndarray, has_title: np.ndarray) -> np.ndarray:
        """bool [Q]: which questions it answers, from whether each gives songs or tags (``given``, bool [Q])
        and a non-empty title (``has_title``, bool [Q])."""

    def probabilities(self, records: list[dict]):
        """(songs [Q, n_songs], tags [Q, n_tags]) for work-directory records (data/workdir.py to_record),
        tensors or arrays; the given items need not be masked (the ensemble blocks them)."""


class _StageFolders:
    """``folder_of`` for a declaration with a quickstart ``folder`` and ``stage_folders``."""

    def folder_of(self, stage: str) -> str | None:
        """The quickstart run folder of one of its ``stages`` (None: the stage has none of its own)."""
        return dict(self.stage_folders).get(stage, self.folder)


@dataclass(frozen=True)
class Member(_StageFolders):
    """One trained member of the ensemble."""
    name: str  # the blend file's key, bench.quality's row ("dae")
    label: str  # its name in logs ("DAE")
    flag: str  # the command-line flag of its run directory ("--dae")
    help: str  # that flag's help
    load: Callable[[Path, Context], Loaded]  # (run directory or export folder, context) -> the loaded member
    folder: str  # its run folder in a quickstart run (launch/quickstart.sh), for bench.quality
    stages: tuple  # quickstart's timings.json keys of its training stages, for bench.quality's train seconds
    description: str  # bench.quality's description of the member alone
    stage_folders: tuple = ()  # (stage, run folder) of a stage not run in ``folder`` (the title's pretraining)


@dataclass(frozen=True)
class Extra(_StageFolders):
    """A member, or a family of members, that hvd_train does not train: the neighbour members, the audio
    member and popularity."""
    name: str  # the blend file's key and bench.quality's member ("audio", "popular"); for the neighbour members
    # their argparse dest ("neighbours"): each is keyed by its kind (NEIGHBOUR_KINDS)
    label: str  # its name in descriptions ("the audio member")
    flag: str | None  # the command-line flag of its run directory ("--audio"); None: always there (popularity)
    help: str  # that flag's help (a command may add what the flag does there)
    load: Callable[[Path, Context], object] | None  # (run directory, context) -> the loaded member
    folder: str | None  # its run folder in a quickstart run (launch/quickstart.sh), for bench.quality
    stages: tuple  # quickstart's timings.json keys of the stages that build it
    requires: str | None = None  # a file of ``folder`` without which a run lacks the member (bench.quality)
    stage_folders: tuple = ()  # (stage, run folder or None) of a stage not run in ``folder``


@dataclass(frozen=True)
class NeighbourKind:
    """One kind of neighbour member (inference/neighbours.py ``--kind``): the ensemble names the member by it."""
    name: str  # the kind: the export's config.json "kind", the blend file's key ("item_cf")
    label: str  # its adjective in descriptions ("item": "item and playlist neighbours")
    folder: str | None  # its run folder in a quickstart run, also bench.quality's row of it alone and its timing
    # stage; None: quickstart does not build it, and bench.quality leaves it out
    description: str | None  # bench.quality's description of it alone

    @property
    def stages(self) -> tuple:
        """quickstart's timings.json keys of the stage that builds it (its folder's name)."""
        return (self.folder,) if self.folder else ()


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
           TitleMember, "title-finetune", ("title_pretrain", "title_finetune"), "title BERT alone (fine-tuned)",
           (("title_pretrain", "title-pretrain"),)),
    Member("word2vec", "Word2Vec", "--word2vec", "Word2Vec run directory (hvd_train/word2vec.py --out)",
           Word2VecMember, "word2vec", ("word2vec",),
           "Word2Vec alone (a question's mean input vector against every output vector)"),
)



def load_audio(run: Path, context: Context) -> AudioMember:
    """The audio member of a CNN run, restricted to the songs outside this work directory's vocabulary."""
    vocabulary_songs = np.array(list(context.index["songs"]), dtype=np.int64)
    return AudioMember(run, context.workdir, context.manifest, vocabulary_songs, len(context.index["tags"]))


def load_neighbour(run: Path, context: Context):
    """The neighbour member of a run of python -m inference.neighbours (its kind in its config)."""
    return load_neighbours(run, context.manifest, context.workdir)


NEIGHBOURS = Extra("neighbours", "the neighbour members", "--neighbours",
                   "a neighbour run directory (python -m inference.neighbours --out); one per kind, repeatable",
                   load_neighbour, None, ())
NEIGHBOUR_KINDS: tuple[NeighbourKind, ...] = (
    NeighbourKind("item_cf", "item", "neighbours",
                  "the ensemble's item-neighbour member alone (inference/neighbours.py, vocabulary items)"),
    NeighbourKind("playlist_cf", "playlist", "playlists",
                  "the ensemble's playlist-neighbour member alone (inference/neighbours.py, vocabulary items)"),
    NeighbourKind("ease", "EASE", None, None),
)
AUDIO = Extra("audio", "the audio member", "--audio",
              "a hvd_train/cnn.py run directory with its audio index (python -m inference.audio index)",
              load_audio, "cnn", ("cnn", "audio_index"), requires=INDEX_FILE, stage_folders=(("audio_index", None),))


def propose(probabilities, blocked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top-k unblocked items of ``probabilities`` [rows, n_items] (an array or a tensor) where
    ``blocked`` [rows, n_items] is false: (indices, probabilities) [rows, min(k, n_items)], index -1 and 0
    where fewer exist. Masking and top-k run where the probabilities are (the GPU when there is one)."""
    import tensorflow as tf

    masked = tf.where(tf.constant(blocked), tf.constant(-np.inf, probabilities.dtype), probabilities)
    top = tf.math.top_k(masked, k=min(k, blocked.shape[1]))
    values, indices = top.values.numpy(), top.indices.numpy()
    missing = ~np.isfinite(values)
    return np.where(missing, -1, indices), np.where(missing, 0.0, values)


class PopularityMember:
    """Popularity: the most frequent training songs and tags (the vocabulary's counts)."""

    def __init__(self, context: Context):
        self.song_counts, self.tag_counts = context.counts["songs"], context.counts["tags"]

    def probabilities(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """A weak member's stand-in: each question's songs [Q, n_songs] and tags [Q, n_tags] as the training
        counts' distribution (the given items are blocked by the caller)."""
        songs = (self.song_counts / self.song_counts.sum()).astype(np.float32)
        tags = (self.tag_counts / self.tag_counts.sum()).astype(np.float32)
        return np.broadcast_to(songs, (len(records), len(songs))), np.broadcast_to(tags, (len(records), len(tags)))

    def candidates(self, blocked_songs: np.ndarray, blocked_tags: np.ndarray) -> Candidates:
        """Each question's 100 most frequent songs and 10 tags it may get (``blocked_*`` [Q, n_items] true
        where not), scored by their training counts."""
        songs = propose(np.broadcast_to(self.song_counts, blocked_songs.shape).astype(np.float32), blocked_songs,
                        SONGS_PER_PLAYLIST)
        tags = propose(np.broadcast_to(self.tag_counts, blocked_tags.shape).astype(np.float32), blocked_tags,
                       TAGS_PER_PLAYLIST)
        return Candidates(*songs, *tags)


POPULARITY = Extra("popular", "popularity", None, "", lambda run, context: PopularityMember(context), None, ())


def quickstart_kinds() -> tuple[NeighbourKind, ...]:
    """The neighbour kinds a quickstart run builds (those with a folder), in NEIGHBOUR_KINDS' order."""
    return tuple(k for k in NEIGHBOUR_KINDS if k.folder)


def add_flags(parser) -> None:
    """One ``--NAME RUNDIR`` option per member of MEMBERS (argparse dest = the member's name), then the
    neighbour members' flag, repeatable: one run per kind (dest ``neighbours``, a list)."""
    for member in MEMBERS:
        parser.add_argument(member.flag, dest=member.name, type=Path, help=member.help)
    parser.add_argument(NEIGHBOURS.flag, dest=NEIGHBOURS.name, type=Path, action="append", default=[],
                        help=NEIGHBOURS.help)


def add_audio_flag(parser, role: str) -> None:
    """The audio member's flag (dest ``audio``); ``role``: what it does in this command, after its help."""
    parser.add_argument(AUDIO.flag, dest=AUDIO.name, type=Path, help=AUDIO.help + role)


def runs_of(args) -> dict[str, Path]:
    """{member name: run directory} of the members given on the command line (add_flags' options)."""
    return {m.name: getattr(args, m.name) for m in MEMBERS if getattr(args, m.name, None) is not None}


def given_runs(parser, args) -> dict[str, Path]:
    """runs_of(args); argparse's usage error (exit 2) when neither a trained member nor a neighbour member is
    given."""
    runs = runs_of(args)
    if not runs and not getattr(args, NEIGHBOURS.name):
        parser.error(f"give at least one of {', '.join([m.flag for m in MEMBERS] + [NEIGHBOURS.flag])}")
    return runs


def main(argv: list[str] = ()) -> int:
    """``python -m inference.members``: one line per trained member, ``NAME FLAG FOLDER`` (launch/quickstart.sh
    reads its member flags, run folders and results from it); ``--neighbours``: the same line per neighbour
    kind that quickstart builds; ``--audio``: the audio member's line."""
    parser = argparse.ArgumentParser(prog="python -m inference.members", description=main.__doc__.split(";")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument(NEIGHBOURS.flag, dest="neighbours", action="store_true", help="the neighbour kinds instead")
    which.add_argument(AUDIO.flag, dest="audio", action="store_true", help="the audio member instead")
    args = parser.parse_args(list(argv))
    if args.neighbours:
        lines = [(k.name, NEIGHBOURS.flag, k.folder) for k in quickstart_kinds()]
    elif args.audio:
        lines = [(AUDIO.name, AUDIO.flag, AUDIO.folder)]
    else:
        lines = [(m.name, m.flag, m.folder) for m in MEMBERS]
    for line in lines:
        print(*line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
