"""Every song's audio embedding and predicted tags from a trained mel CNN, and songs that sound alike.

    python -m inference.audio index --work WORKDIR --model RUNDIR [--out FILE]
    python -m inference.audio similar --work WORKDIR --model RUNDIR --song ID [--top 20] [--meta DATA]

``index`` runs a ``hvd_train/cnn.py`` export over every song of WORKDIR's mel shards (``mel_train``,
``mel_holdout`` and ``mel_rest``: songs of no training playlist too) on their whole stored frames and
writes FILE (default RUNDIR/audio_index.npz, no pickle): ``song_ids`` [n] (song_meta ids, ascending),
``embeddings`` [n, C] (the pooled last block, centred by its mean over the songs and scaled to unit
length: cosine similarity is a dot product), ``tags`` [n, 20] and ``tag_scores`` [n, 20] (the top predicted tag-vocabulary indices and
their sigmoid probabilities), and ``weights_sha256`` (the export it came from). ``similar`` prints the
songs nearest to one song by audio (building the index first when FILE is missing or stale) with the
song's predicted tags. The run must have been trained on WORKDIR (vocabulary hash checked); a song
without a spectrogram is an error naming it (exit status 2).
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
from inference.exports import ExportError, load_cnn

INDEX_FILE = "audio_index.npz"  # a CNN run's audio index, in its run directory (build_index's default file)
TOP_TAGS = 20
KINDS = ("mel_train", "mel_holdout", "mel_rest")


class AudioError(ValueError):
    """An index or a query that cannot be built or answered."""


def export_hash(rundir: Path) -> str:
    export = rundir / "export" if (rundir / "export").is_dir() else rundir
    return sha256_file(export / "weights.npz")


def build_index(workdir: Path, rundir: Path, kinds=KINDS, batch_size: int = 256) -> dict:
    """The index's arrays (see the module docstring) over the songs of ``kinds``."""
    import tensorflow as tf

    from data.pipeline import mel_dataset

    manifest = verify_workdir(workdir, check_shards=False)
    if "mel" not in manifest:
        raise AudioError(f"{workdir} has no mel-spectrogram shards (data.preprocess --mel MELDIR)")
    model, _ = load_cnn(rundir, manifest, workdir)
    @tf.function
    def embed(mel, genres):
        pooled = model.embed(mel)
        return pooled, model.tag_logits(pooled, genres)

    ids, vectors, tags, scores = [], [], [], []
    for kind in kinds:
        for batch in mel_dataset(workdir, kind, batch_size):
            pooled, logits = embed(batch["mel"], batch["genres"])
            top = tf.math.top_k(logits, k=min(TOP_TAGS, model.n_tags))
            ids.append(batch["id"].numpy())
            vectors.append(pooled.numpy())
            tags.append(top.indices.numpy())
            scores.append(tf.sigmoid(top.values).numpy())
    song_ids = np.concatenate(ids)
    order = np.argsort(song_ids, kind="stable")
    vectors = np.concatenate(vectors)[order]
    vectors -= vectors.mean(axis=0)  # pooled ReLU outputs share a large common part: cosines of the rest
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return {"song_ids": song_ids[order], "embeddings": (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32),
            "tags": np.concatenate(tags)[order].astype(np.int32), "tag_scores": np.concatenate(scores)[order],
            "weights_sha256": np.array(export_hash(rundir))}


def read_index(path: Path, rundir: Path) -> dict:
    """An index file's arrays; AudioError when it was built from another export than RUNDIR's."""
    with np.load(path, allow_pickle=False) as f:
        index = {k: f[k] for k in f.files}
    if str(index["weights_sha256"]) != export_hash(rundir):
        raise AudioError(f"{path} was built from another export than {rundir}'s; rebuild it (inference.audio index)")
    return index


def write_index(index: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **index)
    tmp.replace(path)


def nearest(index: dict, song: int, top: int) -> list[tuple[int, float]]:
    """The ``top`` songs nearest to ``song`` by audio cosine, itself left out."""
    row = np.searchsorted(index["song_ids"], song)
    if row >= len(index["song_ids"]) or index["song_ids"][row] != song:
        raise AudioError(f"song {song} has no mel-spectrogram in this work directory")
    scores = index["embeddings"] @ index["embeddings"][row]
    scores[row] = -np.inf
    best = np.argsort(-scores, kind="stable")[:top]
    return [(int(index["song_ids"][i]), float(scores[i])) for i in best]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.audio", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("index", "similar"):
        sub = commands.add_parser(name)
        sub.add_argument("--work", type=Path, required=True, help="the work directory the run was trained on")
        sub.add_argument("--model", type=Path, required=True, help="a hvd_train/cnn.py run directory")
        sub.add_argument("--out", type=Path, help="the index file (default MODEL/audio_index.npz)")
    similar = commands.choices["similar"]
    similar.add_argument("--song", type=int, required=True, help="a song id")
    similar.add_argument("--top", type=int, default=20, help="songs to show")
    similar.add_argument("--meta", type=Path, help="song_meta.json (or its data folder) for song names and artists")
    args = parser.parse_args(argv)
    path = args.out or args.model / INDEX_FILE

    try:
        index = None
        if args.command == "similar" and path.is_file():
            try:
                index = read_index(path, args.model)
            except AudioError:  # stale: built from an earlier export of the run
                index = None
        if index is None:
            index = build_index(args.work, args.model)
            write_index(index, path)
            print(f"audio index of {len(index['song_ids'])} songs -> {path}")
        if args.command == "index":
            return 0
        songs = nearest(index, args.song, args.top)
        song_meta = load_song_meta(song_meta_path(args.meta)) if args.meta else None
    except (AudioError, ExportError, WorkdirError, MelonDataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    vocab = json.loads((args.work / "vocab.json").read_text(encoding="utf-8"))
    row = int(np.searchsorted(index["song_ids"], args.song))
    predicted = ", ".join(vocab["tags"][t][0] for t in index["tags"][row][:5])
    print(f"songs that sound like song {args.song} (its predicted tags: {predicted}):\n")
    print(f"{'rank':>4}  {cell('song', 40)}  {cell('artists', 28)}  {'cosine':>7}")
    for rank, (song, score) in enumerate(songs, 1):
        meta = song_meta[song] if song_meta is not None else {}
        name = f"{meta.get('song_name', '?')} ({song})" if meta else str(song)
        print(f"{rank:>4}  {cell(name, 40)}  {cell(', '.join(meta.get('artist_name_basket', [])), 28)}  {score:7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
