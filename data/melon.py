"""Readers and writers for the Kakao Arena Melon files, with schema validation.

Every reader checks every record and raises :class:`MelonDataError` naming the file,
the record index, the playlist/song id when there is one, and the offending field.
Nothing is dropped silently: a reader either returns every record or raises.

Files (see ../shared/data/README.md for the official schema):

* playlists (``train.json``, ``val.json``, ``test.json``, split files): ``id``, ``plylst_title``,
  ``tags``, ``songs``, ``like_cnt``, ``updt_date``. Answer files written by ``data.split`` carry
  the same fields; question files may lack ``like_cnt`` in third-party copies, so it is optional.
* ``song_meta.json``: ``id``, ``album_id``, ``album_name``, ``artist_id_basket``,
  ``artist_name_basket``, ``song_name``, ``song_gn_gnr_basket``, ``song_gn_dtl_gnr_basket``,
  ``issue_date``.
* ``genre_gn_all.json``: ``{code: name}``.
* results: ``id``, ``songs``, ``tags``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

UPDT_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?$")
ISSUE_DATE_RE = re.compile(r"^\d{8}$")
GENRE_CODE_RE = re.compile(r"^GN\d{4}$")


class MelonDataError(ValueError):
    """A Melon data file does not follow the schema."""


def _where(path: Path, index: int, record: Any) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{path}: record {index}" + (f" (id={rid})" if rid is not None else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value: Any) -> str | None:
    return None if _is_int(value) else f"expected an integer, got {type(value).__name__} {value!r:.40}"


def _check_str(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {type(value).__name__} {value!r:.40}"


def _list_of(item_check: Callable[[Any], str | None], unique: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"expected a list, got {type(value).__name__} {value!r:.40}"
        for position, item in enumerate(value):
            problem = item_check(item)
            if problem:
                return f"item {position}: {problem}"
        if unique and len(set(value)) != len(value):
            return "contains duplicates"
        return None

    return check


def _matching(regex: re.Pattern, what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not regex.match(value):
            return f"expected {what}, got {value!r:.40}"
        return None

    return check


PLAYLIST_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "id": _check_int,
    "plylst_title": _check_str,
    "tags": _list_of(_check_str, unique=True),
    "songs": _list_of(_check_int, unique=True),
    "like_cnt": _check_int,
    "updt_date": _matching(UPDT_DATE_RE, "'YYYY-MM-DD HH:MM:SS.000'"),
}
PLAYLIST_OPTIONAL = {"like_cnt"}

SONG_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "id": _check_int,
    "album_id": _check_int,
    "album_name": _check_str,
    "artist_id_basket": _list_of(_check_int),
    "artist_name_basket": _list_of(_check_str),
    "song_name": _check_str,
    "song_gn_gnr_basket": _list_of(_matching(GENRE_CODE_RE, "a genre code GNxxxx")),
    "song_gn_dtl_gnr_basket": _list_of(_matching(GENRE_CODE_RE, "a genre code GNxxxx")),
    "issue_date": _matching(ISSUE_DATE_RE, "'YYYYMMDD'"),
}

RESULT_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "id": _check_int,
    "songs": _list_of(_check_int),
    "tags": _list_of(_check_str),
}


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing, empty or malformed file is a MelonDataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise MelonDataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MelonDataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise MelonDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename): never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _validate_records(
    path: Path,
    records: Any,
    fields: dict[str, Callable[[Any], str | None]],
    optional: set[str] = frozenset(),
) -> list[dict]:
    if not isinstance(records, list):
        raise MelonDataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    seen_ids: dict[int, int] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise MelonDataError(f"{_where(path, index, record)}: expected an object, got {type(record).__name__}")
        for field, check in fields.items():
            if field not in record:
                if field in optional:
                    continue
                raise MelonDataError(f"{_where(path, index, record)}: field '{field}' is missing")
            problem = check(record[field])
            if problem:
                raise MelonDataError(f"{_where(path, index, record)}: field '{field}': {problem}")
        rid = record["id"]
        if rid in seen_ids:
            raise MelonDataError(f"{_where(path, index, record)}: duplicate id (first at record {seen_ids[rid]})")
        seen_ids[rid] = index
    return records


def load_playlists(path: str | os.PathLike) -> list[dict]:
    """Load and validate a playlist file (train/val/test, split questions or answers)."""
    path = Path(path)
    playlists = _validate_records(path, read_json(path), PLAYLIST_FIELDS, PLAYLIST_OPTIONAL)
    log.info(
        "%s: %d playlists, %d song entries, %d tag entries",
        path, len(playlists), sum(len(p["songs"]) for p in playlists), sum(len(p["tags"]) for p in playlists),
    )
    return playlists


def load_song_meta(path: str | os.PathLike) -> list[dict]:
    """Load and validate ``song_meta.json``; ids must be 0..N-1 in order, as in the official file."""
    path = Path(path)
    songs = _validate_records(path, read_json(path), SONG_FIELDS)
    for index, song in enumerate(songs):
        if song["id"] != index:
            raise MelonDataError(f"{_where(path, index, song)}: field 'id': expected {index} (ids are 0..N-1 in order)")
        if len(song["artist_id_basket"]) != len(song["artist_name_basket"]):
            raise MelonDataError(
                f"{_where(path, index, song)}: fields 'artist_id_basket'/'artist_name_basket' differ in length"
            )
    log.info("%s: %d songs", path, len(songs))
    return songs


def load_genres(path: str | os.PathLike) -> dict[str, str]:
    """Load ``genre_gn_all.json`` ({code: name})."""
    path = Path(path)
    genres = read_json(path)
    if not isinstance(genres, dict):
        raise MelonDataError(f"{path}: expected a JSON object {{code: name}}, got {type(genres).__name__}")
    for code, name in genres.items():
        if not GENRE_CODE_RE.match(code):
            raise MelonDataError(f"{path}: key {code!r}: expected a genre code GNxxxx")
        if not isinstance(name, str):
            raise MelonDataError(f"{path}: key {code!r}: expected a string name, got {type(name).__name__}")
    log.info("%s: %d genre codes", path, len(genres))
    return genres


def load_results(path: str | os.PathLike) -> list[dict]:
    """Load a results file (``[{id, songs, tags}]``); counts and uniqueness are checked by the evaluator."""
    path = Path(path)
    return _validate_records(path, read_json(path), RESULT_FIELDS)


def load_dataset(directory: str | os.PathLike) -> dict[str, Any]:
    """Load every official file present in ``directory`` (train/val/test, song_meta, genre table)."""
    directory = Path(directory)
    out: dict[str, Any] = {}
    for name in ("train", "val", "test"):
        if (directory / f"{name}.json").exists():
            out[name] = load_playlists(directory / f"{name}.json")
    if (directory / "song_meta.json").exists():
        out["song_meta"] = load_song_meta(directory / "song_meta.json")
    if (directory / "genre_gn_all.json").exists():
        out["genres"] = load_genres(directory / "genre_gn_all.json")
    if not out:
        raise MelonDataError(f"{directory}: none of train.json, val.json, test.json, song_meta.json found")
    return out
