"""Turn a split into the work directory every trainer and the inference job read.

    mpirun -np N python -m data.preprocess --split SPLITDIR --meta DATADIR --out WORKDIR \
        [--mel MELDIR] [--config configs/data.yaml] [--force]

Reads ``SPLITDIR/orig/train.json``, ``SPLITDIR/questions/val.json``, ``SPLITDIR/answers/val.json`` and
``DATADIR/song_meta.json``; writes into WORKDIR:

* ``vocab.json``: the song, tag and artist vocabularies (``[[item, count], ...]``, index = id), each kept
  song's artists, the recall levels (data/vocab.py);
* ``release_dates.npz``: ``release_dates``, the corrected release date (int YYYYMMDD, 0 = unknown) of
  every song id of song_meta.json;
* ``title.model``: the sentencepiece BPE title tokenizer (data/title.py);
* ``shards/train-SSSSS-of-NNNNN.tfrecord`` and ``shards/val-…``: one tf.train.Example per training
  playlist / validation question (data/records.py); playlist i goes to shard ``i mod NNNNN``;
* ``eval/questions.json``, ``eval/answers.json``: the validation questions and answers, for scoring;
* with ``--mel MELDIR`` (a folder holding ``arena_mel_*.tar`` or ``arena_mel/``, data/mel.py):
  ``shards/mel_{train,holdout,rest}-…``, every song's mel-spectrogram with its label tags and genres
  (data/mel_records.py), and the manifest's ``mel`` entry (sizes, genre codes, what was read and what
  was bad);
* ``manifest.json``: every file with its sha256, every shard with its record count, vocabulary sizes
  and the config used.

Rank 0 builds the vocabularies, dates and tokenizer and broadcasts them; every rank then encodes and
writes the shards ``s`` with ``s mod N == rank``. The output is byte-identical for any N. Everything is
written into ``WORKDIR.partial-*`` and renamed to WORKDIR only when complete, so a WORKDIR that exists is
whole. An existing WORKDIR is refused unless ``--force``.

The work directory's API for its readers (``verify_workdir``, the record format, hashes) is data/workdir.py.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import yaml

from data.mel import MelReport, MelSource
from data.mel_records import (KINDS as MEL_KINDS, check_config as check_mel_config, plan as plan_mel_kinds, song_labels,
                               write_shards as write_mel_shards)
from data.melon import MelonDataError, load_playlists, load_song_meta, song_meta_path, write_json
from data.records import encode
from data.vocab import build_vocab, release_dates
from data.workdir import FORMAT_VERSION, index_of, sha256_file, to_record

log = logging.getLogger("data.preprocess")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "data.yaml"


def load_config(path: Path) -> dict:
    config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    try:
        for key in ("song_recall", "tag_recall", "artist_recall"):
            float(config["vocab"][key])
        for key in ("vocab_size", "character_coverage", "seed"):
            config["tokenizer"][key]
        int(config["shards"]["min_shards"]), int(config["shards"]["records_per_shard"])
        int(config["max_title_pieces"])
        check_mel_config(config["mel"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: missing or malformed setting {e}") from None
    return config


def shard_count(records: int, config: dict) -> int:
    shards = config["shards"]
    return max(int(shards["min_shards"]), math.ceil(records / int(shards["records_per_shard"])))


def shard_name(kind: str, index: int, total: int) -> str:
    return f"shards/{kind}-{index:05d}-of-{total:05d}.tfrecord"


def write_shards(kind: str, playlists: list[dict], total: int, rank: int, size: int, index: dict, tokenizer,
                 max_title_pieces: int, workdir: Path) -> list[dict]:
    """Write this rank's shards of ``playlists``; returns [{file, records, kept, sha256}] for them, ``kept``
    counting the records each training pipeline reads (data/pipeline.py): ``dae``, those with an
    in-vocabulary song or tag; ``title``, those with a non-empty title."""
    import tensorflow as tf
    from tqdm import tqdm

    mine = [s for s in range(total) if s % size == rank]
    written = []
    for s in tqdm(mine, desc=f"{kind} shards (rank {rank})", disable=rank != 0, unit="shard"):
        name = shard_name(kind, s, total)
        path = workdir / name
        count, kept = 0, {"dae": 0, "title": 0}
        with tf.io.TFRecordWriter(str(path)) as writer:
            for playlist in playlists[s::total]:
                record = to_record(playlist, index, tokenizer, max_title_pieces)
                writer.write(encode(record))
                count += 1
                kept["dae"] += bool(record["songs"] or record["tags"])
                kept["title"] += bool(record["title"])
        written.append({"file": name, "records": count, "kept": kept, "sha256": sha256_file(path)})
    return written


def build_shared(split: Path, meta: Path, config: dict, train: list[dict], questions: list[dict],
                 mel: Path | None = None) -> dict:
    """Rank 0's part: vocabularies, release dates, tokenizer (everything the shards depend on), and with
    ``mel`` the spectrogram files found there, their songs' labels and their split (:func:`mel_plan`)."""
    from data.title import train_tokenizer

    song_meta = load_song_meta(meta)
    for p in train + questions:
        for s in p["songs"]:
            if not 0 <= s < len(song_meta):
                raise ValueError(f"playlist id {p['id']}: song id {s} is not in {meta}")
    v = config["vocab"]
    vocab = build_vocab(train, song_meta, float(v["song_recall"]), float(v["tag_recall"]), float(v["artist_recall"]))
    dates = release_dates(song_meta, train + questions)
    t = config["tokenizer"]
    model = train_tokenizer([p["plylst_title"] for p in train], int(t["vocab_size"]), float(t["character_coverage"]),
                            int(t["seed"]))
    distinct = {"songs": len({s for p in train for s in p["songs"]}), "tags": len({t for p in train for t in p["tags"]})}
    shared = {"vocab": vocab, "release_dates": dates, "tokenizer": model, "distinct": distinct}
    if mel is not None:
        shared["mel"] = mel_plan(mel, config["mel"], train, questions, song_meta, vocab)
    return shared


def mel_plan(root: Path, mel: dict, train: list[dict], questions: list[dict], song_meta: list[dict], vocab: dict) -> dict:
    """The spectrogram files under ``root``, the labels of their songs and their split into the mel shard
    kinds (data/mel_records.py), as plain values every rank receives."""
    source = MelSource(root)
    for song in list(source.locations):
        if song >= len(song_meta):
            raise ValueError(f"{source.locations[song]}: song id {song} is not in song_meta.json")
    tag_index = {t: i for i, (t, _) in enumerate(vocab["tags"])}
    tags, genres, codes = song_labels(train, song_meta, tag_index, int(mel["label_tags"]))
    kinds = plan_mel_kinds(source, tags, float(mel["holdout_share"]))
    without = len({s for p in train + questions for s in p["songs"]} - set(source.locations))
    log.info("mel-spectrograms under %s: %d files (%d duplicates, %d unexpected names, %d corrupt archives); "
             "%d train, %d hold-out, %d other songs; %d songs of the playlists have none", root,
             len(source.locations), source.duplicates, source.unexpected, source.corrupt_archives,
             *map(len, kinds.values()), without)
    return {"root": str(root), "codes": codes, "kinds": kinds,
            "locations": {s: (str(w.path), w.member) for s, w in source.locations.items()},
            "labels": {"tags": {s: tags[s] for s in source.locations if s in tags},
                       "genres": {s: genres[s] for s in source.locations}},
            "found": {**source.found(), "playlist_songs_without": without}}


def finish(workdir: Path, out: Path, shared: dict, title_pieces: int, shards: dict, config: dict, inputs: dict,
           force: bool, mel: dict | None = None) -> dict:
    """Rank 0: the non-shard files, the manifest, then the atomic rename of the whole directory."""
    write_json(shared["vocab"], workdir / "vocab.json")
    with open(workdir / "release_dates.npz", "wb") as f:
        np.savez(f, release_dates=shared["release_dates"])
    (workdir / "title.model").write_bytes(shared["tokenizer"])
    vocab = shared["vocab"]
    files = {name: {"file": name, "sha256": sha256_file(workdir / name)}
             for name in ("vocab.json", "release_dates.npz", "title.model", "eval/questions.json", "eval/answers.json")}
    manifest = {
        "format": FORMAT_VERSION,
        "created_by": "data.preprocess",
        "inputs": inputs,
        "config": config,
        "files": files,
        "sizes": {"songs": len(vocab["songs"]), "tags": len(vocab["tags"]), "artists": len(vocab["artists"]),
                  "title_pieces": title_pieces, "song_meta": len(shared["release_dates"])},
        "records": {kind: sum(s["records"] for s in v) for kind, v in shards.items()},
        "shards": shards,
    }
    if mel is not None:
        manifest["mel"] = mel
    write_json(manifest, workdir / "manifest.json")
    if out.exists():
        if not force:
            raise FileExistsError(f"{out} appeared while preprocessing; the result is left in {workdir}")
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        out.rename(old)
        workdir.rename(out)
        shutil.rmtree(old)
    else:
        workdir.rename(out)
    return manifest


def write_mel(plan: dict, mel: dict, rank: int, size: int, workdir: Path) -> tuple[dict, object]:
    """This rank's mel shards of every kind ({kind: entries}) and what it read (a data.mel.MelReport)."""
    written, report = {}, MelReport()
    per_shard = {"shards": {"min_shards": mel["min_shards"], "records_per_shard": mel["records_per_shard"]}}
    for kind in MEL_KINDS:
        songs = plan["kinds"][kind]
        written[kind], read = write_mel_shards(kind, songs, shard_count(len(songs), per_shard), rank, size,
                                               plan["locations"], plan["labels"], int(mel["frames"]), workdir)
        report.merge(read)
    return written, report


def mel_manifest(plan: dict, mel: dict, reports: list) -> dict:
    """The manifest's ``mel`` entry: the source, shard length, genre codes, and what every rank read."""
    report = MelReport()
    for part in reports:
        report.merge(part)
    report.missing = plan["found"]["playlist_songs_without"]
    log.info("%s", report.summary())
    return {"source": plan["root"], "frames": int(mel["frames"]), "label_tags": int(mel["label_tags"]),
            "holdout_share": float(mel["holdout_share"]), "genres": plan["codes"], "found": plan["found"],
            "report": report.as_dict()}


def _inputs(split: Path, meta: Path) -> dict:
    return {name: {"file": str(path.name), "sha256": sha256_file(path)} for name, path in (
        ("train", split / "orig/train.json"), ("questions", split / "questions/val.json"),
        ("answers", split / "answers/val.json"), ("song_meta", meta))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.preprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, required=True, help="folder written by data.split")
    parser.add_argument("--meta", type=Path, required=True, help="song_meta.json, or the data folder holding it")
    parser.add_argument("--out", type=Path, required=True, help="work directory to create")
    parser.add_argument("--mel", type=Path, help="also write mel-spectrogram shards from this folder's arena_mel_*.tar "
                        "or arena_mel/ (data/mel.py)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--force", action="store_true", help="replace an existing work directory")
    parser.add_argument("--stats-out", type=Path, help="also write wall time and each rank's peak memory here (JSON)")
    args = parser.parse_args(argv)
    args.meta = song_meta_path(args.meta)

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s")
    started = time.perf_counter()

    # Rank 0 checks everything that can be checked cheaply, then tells every rank whether to go on.
    problem = None
    if rank == 0:
        needed = [args.split / "orig/train.json", args.split / "questions/val.json", args.split / "answers/val.json",
                  args.meta]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            problem = f"missing input: {', '.join(missing)}"
        elif args.out.exists() and not args.force:
            problem = f"{args.out} exists; pass --force to replace it"
        else:
            try:
                config = load_config(args.config)
            except (OSError, ValueError, yaml.YAMLError) as e:
                problem = str(e)
    problem = comm.bcast(problem, root=0)
    if problem:
        if rank == 0:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    config = load_config(args.config)

    from data.title import TitleTokenizer

    shared = None
    try:
        train = load_playlists(args.split / "orig/train.json")
        questions = load_playlists(args.split / "questions/val.json")
        if rank == 0:
            shared = build_shared(args.split, args.meta, config, train, questions, args.mel)
            workdir = args.out.with_name(f"{args.out.name}.partial-{os.getpid()}")
            (workdir / "shards").mkdir(parents=True)
            (workdir / "eval").mkdir()
            shutil.copyfile(args.split / "questions/val.json", workdir / "eval/questions.json")
            shutil.copyfile(args.split / "answers/val.json", workdir / "eval/answers.json")
            shared["workdir"] = str(workdir)
            s = shared["vocab"]
            log.info("vocabularies from %d training playlists: %d songs (of %d distinct, recall %.2f), "
                     "%d tags (of %d, recall %.2f), %d artists (recall %.2f)", len(train), len(s["songs"]),
                     shared["distinct"]["songs"], s["recall"]["songs"], len(s["tags"]), shared["distinct"]["tags"],
                     s["recall"]["tags"], len(s["artists"]), s["recall"]["artists"])
        error = None
    except (MelonDataError, ValueError, OSError, tarfile.TarError) as e:
        error = str(e)
    errors = comm.allgather(error)
    if any(errors):
        if rank == 0:
            print(f"error: {next(e for e in errors if e)}", file=sys.stderr)
            if shared and "workdir" in shared:
                shutil.rmtree(shared["workdir"], ignore_errors=True)
        return 2
    shared = comm.bcast(shared, root=0)
    workdir = Path(shared["workdir"])
    tokenizer = TitleTokenizer(shared["tokenizer"])
    if rank == 0:
        log.info("title tokenizer: %d pieces", tokenizer.size)
    index = index_of(shared["vocab"])
    max_pieces = int(config["max_title_pieces"])
    totals = {"train": shard_count(len(train), config), "val": shard_count(len(questions), config)}
    mine = {kind: write_shards(kind, records, totals[kind], rank, size, index, tokenizer, max_pieces, workdir)
            for kind, records in (("train", train), ("val", questions))}
    mel_report = None
    if "mel" in shared:
        mel_shards, mel_report = write_mel(shared["mel"], config["mel"], rank, size, workdir)
        mine.update(mel_shards)
        totals.update(dict.fromkeys(mel_shards))
    gathered = comm.gather(mine, root=0)
    reports = comm.gather(mel_report, root=0)
    peak_rss = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, root=0)
    status = 0
    if rank == 0:
        shards = {kind: sorted((s for part in gathered for s in part[kind]), key=lambda s: s["file"]) for kind in totals}
        try:
            mel = mel_manifest(shared["mel"], config["mel"], reports) if "mel" in shared else None
            manifest = finish(workdir, args.out, shared, tokenizer.size, shards, config, _inputs(args.split, args.meta),
                              args.force, mel)
            log.info("wrote %s with %d ranks in %.1fs: %d train records in %d shards, %d validation questions in %d "
                     "shards", args.out, size, time.perf_counter() - started, manifest["records"]["train"],
                     len(shards["train"]), manifest["records"]["val"], len(shards["val"]))
            log.info("peak memory per rank: %s", ", ".join(f"{b / 1024**3:.2f} GB" for b in peak_rss))
            if args.stats_out:
                write_json({"ranks": size, "wall_s": round(time.perf_counter() - started, 2), "peak_rss_bytes": peak_rss,
                            "records": manifest["records"], "sizes": manifest["sizes"]}, args.stats_out)
        except (OSError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
    return comm.bcast(status, root=0)


if __name__ == "__main__":
    sys.exit(main())
