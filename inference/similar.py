"""The songs and tags nearest to a song, a tag or a title in a Word2Vec run's vectors, as a table.

    python -m inference.similar --work WORKDIR --model RUNDIR (--song ID | --tag TAG | --title TEXT) \
        [--top 20] [--meta DATA/song_meta.json]

RUNDIR is a ``hvd_train/word2vec.py`` run directory (or its export); its vocabulary and tokenizer must be
WORKDIR's. Similarity is the cosine of the exported unit-length input vectors; a title's vector is the
mean of its pieces' vectors. With ``--meta`` (the song_meta.json WORKDIR was built from, or its data folder)
songs are shown with their names and artists. A song id or tag outside the vocabulary, or a title with
no known piece, is an error naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from data.melon import MelonDataError, load_song_meta, song_meta_path
from data.workdir import WorkdirError, sha256_file, verify_workdir
from inference.display import cell
from inference.exports import ExportError, load_export


class SimilarError(ValueError):
    """A query that cannot be answered (a run that cannot be used is inference/exports.py's ExportError)."""


class Vectors:
    """A Word2Vec export over a work directory: the unit-length input vectors of its songs, tags and pieces."""

    def __init__(self, workdir: Path, rundir: Path):
        from data.title import TitleTokenizer

        manifest = verify_workdir(workdir, check_shards=False)
        weights, _ = load_export(Path(rundir), ("word2vec",), manifest, workdir)
        vocab = json.loads((workdir / "vocab.json").read_text(encoding="utf-8"))
        self.song_ids = [s for s, _ in vocab["songs"]]
        self.tags = [t for t, _ in vocab["tags"]]
        self.song_index = {s: i for i, s in enumerate(self.song_ids)}
        self.tag_index = {t: i for i, t in enumerate(self.tags)}
        self.vectors = weights["unit_inputs"]  # [songs + tags + pieces, d], unit rows
        self.tokenizer = TitleTokenizer(workdir / "title.model")
        self.manifest = manifest

    def query(self, song: int | None = None, tag: str | None = None, title: str | None = None) -> tuple[np.ndarray, int]:
        """(the query's unit vector [d], its own row or -1)."""
        n_songs, n_tags = len(self.song_ids), len(self.tags)
        if song is not None:
            if song not in self.song_index:
                raise SimilarError(f"song {song} is not in the {len(self.song_ids)}-song vocabulary of this work directory")
            row = self.song_index[song]
            return self.vectors[row], row
        if tag is not None:
            if tag not in self.tag_index:
                raise SimilarError(f"tag {tag!r} is not in the {len(self.tags)}-tag vocabulary of this work directory")
            row = n_songs + self.tag_index[tag]
            return self.vectors[row], row
        pieces = self.tokenizer.encode(title or "")
        if not pieces:
            raise SimilarError(f"title {title!r} has no piece the tokenizer knows (empty after normalising)")
        mean = self.vectors[[n_songs + n_tags + p for p in pieces]].mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12), -1

    def nearest(self, vector: np.ndarray, own: int, top: int) -> tuple[list, list]:
        """([(song id, cosine)], [(tag, cosine)]): the ``top`` nearest songs and tags, the query itself left out."""
        n_songs, n_tags = len(self.song_ids), len(self.tags)
        scores = self.vectors[: n_songs + n_tags] @ vector
        if own >= 0:
            scores[own] = -np.inf
        songs = np.argsort(-scores[:n_songs], kind="stable")[:top]
        tags = np.argsort(-scores[n_songs:], kind="stable")[:top]
        return ([(self.song_ids[i], float(scores[i])) for i in songs],
                [(self.tags[i], float(scores[n_songs + i])) for i in tags])


def table(songs: list, tags: list, song_meta: list | None) -> str:
    lines = [f"{'rank':>4}  {cell('song', 40)}  {cell('artists', 28)}  {'cosine':>7}"]
    for rank, (song, score) in enumerate(songs, 1):
        meta = song_meta[song] if song_meta is not None and 0 <= song < len(song_meta) else {}
        name = f"{meta.get('song_name', '?')} ({song})" if meta else str(song)
        lines.append(f"{rank:>4}  {cell(name, 40)}  {cell(', '.join(meta.get('artist_name_basket', [])), 28)}  "
                     f"{score:7.4f}")
    lines += ["", f"{'rank':>4}  {cell('tag', 40)}  {'cosine':>7}"]
    lines += [f"{rank:>4}  {cell(tag, 40)}  {score:7.4f}" for rank, (tag, score) in enumerate(tags, 1)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.similar", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="the work directory the run was trained on")
    parser.add_argument("--model", type=Path, required=True, help="a hvd_train/word2vec.py run directory")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--song", type=int, help="a song id")
    query.add_argument("--tag", help="a tag")
    query.add_argument("--title", help="a playlist title")
    parser.add_argument("--top", type=int, default=20, help="songs and tags to show")
    parser.add_argument("--meta", type=Path, help="song_meta.json (or its data folder) for song names and artists")
    args = parser.parse_args(argv)
    if args.top <= 0:
        parser.error("--top must be positive")

    try:
        vectors = Vectors(args.work, args.model)
        vector, own = vectors.query(args.song, args.tag, args.title)
        song_meta = None
        if args.meta is not None:
            meta = song_meta_path(args.meta)
            if sha256_file(meta) != vectors.manifest["inputs"]["song_meta"]["sha256"]:
                raise SimilarError(f"{meta} is not the song_meta.json {args.work} was built from (sha256 differs)")
            song_meta = load_song_meta(meta)
    except (SimilarError, ExportError, WorkdirError, MelonDataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    what = f"song {args.song}" if args.song is not None else f"tag {args.tag!r}" if args.tag else f"title {args.title!r}"
    print(f"nearest to {what} ({args.model}):\n")
    print(table(*vectors.nearest(vector, own, args.top), song_meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
