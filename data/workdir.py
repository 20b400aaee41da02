"""A work directory (written by ``data.preprocess``) as its readers see it: its check against the manifest,
the sha256 hashes it is identified by, and the record format (vocabulary indices and title pieces) that
the shards hold and the ensemble builds for new questions. Importing it needs no MPI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from data.vocab import updt_day

FORMAT_VERSION = 2  # 2: every shard records how many records each training pipeline keeps


class WorkdirError(ValueError):
    """A work directory is missing, incomplete, corrupted, or does not match its manifest."""


# The work-directory files every trained model and fitted blend depends on, and the key an export's
# config.json stores each one's sha256 under. Checkpoints (workdir.json) and blend files record them by file
# name (identity), exports by key (export_identity); a record written before a file was added lacks it and
# is not checked on it.
IDENTITY_FILES = {"vocab.json": "vocab_sha256", "title.model": "tokenizer_sha256",
                  "release_dates.npz": "release_dates_sha256"}
ALWAYS_RECORDED = ("vocab.json", "title.model")  # in every record, old ones included


def identity(manifest: dict) -> dict:
    """{file name: sha256} of the work directory's IDENTITY_FILES, from its manifest."""
    return {name: manifest["files"][name]["sha256"] for name in IDENTITY_FILES}


def export_identity(manifest: dict) -> dict:
    """identity() keyed as an export's config.json stores it (vocab_sha256, tokenizer_sha256, ...)."""
    return {key: manifest["files"][name]["sha256"] for name, key in IDENTITY_FILES.items()}


def identity_mismatch(recorded: dict, manifest: dict, by_key: bool = False) -> list[str]:
    """The IDENTITY_FILES whose sha256 in ``recorded`` (keyed by file name, or with ``by_key`` as exports
    store them) is not this work directory's; a file missing from the record is not compared, except those
    of ALWAYS_RECORDED."""
    ours = identity(manifest)
    wrong = []
    for name, key in IDENTITY_FILES.items():
        stored = recorded.get(key if by_key else name)
        if (stored is None and name in ALWAYS_RECORDED) or (stored is not None and stored != ours[name]):
            wrong.append(name)
    return wrong


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_workdir(workdir: str | os.PathLike, check_shards: bool = True) -> dict:
    """Load WORKDIR's manifest and check every file against it; returns the manifest.

    Raises WorkdirError naming the first missing, truncated or altered file (a shard whose sha256 differs
    from the manifest's, vocabularies or tokenizer replaced by another run's, ...).
    """
    workdir = Path(workdir)
    manifest_path = workdir / "manifest.json"
    if not manifest_path.is_file():
        raise WorkdirError(f"{workdir}: no manifest.json; not a complete work directory (run data.preprocess)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WorkdirError(f"{manifest_path}: not valid JSON ({e.msg})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise WorkdirError(f"{manifest_path}: format {manifest.get('format')!r}, this code reads {FORMAT_VERSION}; "
                           "rerun data.preprocess")
    entries = list(manifest["files"].values())
    if check_shards:
        entries += [s for kind in manifest["shards"].values() for s in kind]
    for entry in entries:
        path = workdir / entry["file"]
        if not path.is_file():
            raise WorkdirError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise WorkdirError(f"{path}: sha256 differs from manifest.json (truncated, corrupted, or from another run)")
    return manifest


def to_record(playlist: dict, index: dict, tokenizer, max_title_pieces: int) -> dict:
    """A playlist as vocabulary indices (out-of-vocabulary items dropped) and title pieces."""
    songs = [index["songs"][s] for s in playlist["songs"] if s in index["songs"]]
    artists = list(dict.fromkeys(a for s in songs for a in index["song_artists"][s]))
    return {
        "id": playlist["id"],
        "updt_date": updt_day(playlist["updt_date"]),
        "songs": songs,
        "tags": [index["tags"][t] for t in playlist["tags"] if t in index["tags"]],
        "artists": artists,
        "title": tokenizer.encode(playlist["plylst_title"], max_title_pieces),
    }


def index_of(vocab: dict) -> dict:
    return {
        "songs": {s: i for i, (s, _) in enumerate(vocab["songs"])},
        "tags": {t: i for i, (t, _) in enumerate(vocab["tags"])},
        "song_artists": vocab["song_artists"],
    }
