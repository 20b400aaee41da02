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

What counts as malformed, each a :class:`MelonDataError` (a ``ValueError``):

* the file: missing, not a regular file, unreadable, not UTF-8, not valid JSON (``NaN``/``Infinity``
  included, integers over 4,300 digits, nesting too deep for the parser), not a list of objects; a
  string or key anywhere, extra fields included, holding a lone UTF-16 surrogate (``"\\ud800"``, which
  no UTF-8 file can store, so that the record could never be written back: the error names the record
  and field);
* a record: a required field missing; a field of the wrong type (``true``, ``1.0`` or ``"1"`` are not
  integers); an integer outside the signed 64-bit range, or a negative id (playlist, song, album and
  artist ids are non-negative, as in the official files: a negative one would index arrays from the
  end downstream); a repeated song or tag within a playlist; a repeated record id within a file.

What is accepted as it is (documented, not errors): extra fields (kept, ignored by the readers);
empty files of records (``[]``: zero records); empty ``songs``/``tags`` lists; any Unicode in titles and
names (emoji, control characters written as JSON escapes); arbitrarily long lists; a key repeated
within one JSON object (JSON leaves it undefined; Python's parser keeps the last value).

Dates and genre codes are checked for their form, whole and in ASCII digits (``updt_date``
``YYYY-MM-DD HH:MM:SS[.fff]``, ``issue_date`` ``YYYYMMDD`` with ``00`` for unknown parts, ``GNxxxx``),
not as calendar dates. Whether an id exists in another file (a playlist's song in ``song_meta.json``)
is the consumer's check (``data.preprocess``); results' counts and uniqueness are the evaluator's
(``data.ndcg``)."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

# Matched whole (fullmatch) with ASCII digits: ``$`` alone accepts a trailing newline, ``\d`` any Unicode digit.
UPDT_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?")
ISSUE_DATE_RE = re.compile(r"[0-9]{8}")
GENRE_CODE_RE = re.compile(r"GN[0-9]{4}")


class MelonDataError(ValueError):
    """A Melon data file does not follow the schema."""


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _where(path: Path | str, index: int, record: Any) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    if rid is None:
        shown = ""
    elif _is_int(rid) and INT64_MIN <= rid <= INT64_MAX:
        shown = f" (id={rid})"
    else:  # a hostile id: quoted, escaped and cut, so the message stays one short line
        shown = f" (id={rid!r:.40})"
    return f"{path}: record {index}{shown}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {value!r:.40}"


def _check_int(value: Any) -> str | None:
    if not _is_int(value):
        return f"expected an integer, {_got(value)}"
    if not INT64_MIN <= value <= INT64_MAX:
        return f"expected an integer in the 64-bit range, {_got(value)}"
    return None


def _check_id(value: Any) -> str | None:
    problem = _check_int(value)
    if problem is None and value < 0:
        return f"expected a non-negative id, {_got(value)}"
    return problem


def _check_str(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, {_got(value)}"


def _list_of(item_check: Callable[[Any], str | None], unique: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"expected a list, {_got(value)}"
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
        if not isinstance(value, str) or not regex.fullmatch(value):
            return f"expected {what}, got {value!r:.40}"
        return None

    return check


PLAYLIST_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "id": _check_id,
    "plylst_title": _check_str,
    "tags": _list_of(_check_str, unique=True),
    "songs": _list_of(_check_id, unique=True),
    "like_cnt": _check_int,
    "updt_date": _matching(UPDT_DATE_RE, "'YYYY-MM-DD HH:MM:SS.000'"),
}
PLAYLIST_OPTIONAL = {"like_cnt"}

SONG_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "id": _check_id,
    "album_id": _check_id,
    "album_name": _check_str,
    "artist_id_basket": _list_of(_check_id),
    "artist_name_basket": _list_of(_check_str),
    "song_name": _check_str,
    "song_gn_gnr_basket": _list_of(_matching(GENRE_CODE_RE, "a genre code GNxxxx")),
    "song_gn_dtl_gnr_basket": _list_of(_matching(GENRE_CODE_RE, "a genre code GNxxxx")),
    "issue_date": _matching(ISSUE_DATE_RE, "'YYYYMMDD'"),
}

RESULT_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "id": _check_id,
    "songs": _list_of(_check_id),
    "tags": _list_of(_check_str),
}


class _NotJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON value")


# Any \uD800-\uDFFF escape in the raw text. Lone surrogates can only come from such escapes (the UTF-8
# decoder refuses encoded ones), so a file without one needs no further check; one with one (emoji
# written by an ensure_ascii writer are surrogate pairs) gets a whole check at C speed, then a walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _has_lone_surrogate(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        return _lone_surrogate(obj) is not None
    return False


def _lone_surrogate(obj: Any) -> tuple[list[tuple[str, Any]], str, int] | None:
    """(where, string, position) of the first string or key, in document order, holding a lone surrogate.

    ``where`` is a list of steps ``("item", index)`` / ``("key", name)`` / ``("in key", name)``. Iterative,
    so that it follows any nesting the parser accepted.
    """
    stack: list[tuple[Any, list]] = [(obj, [])]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as e:
                    return where, value, e.start
        elif isinstance(value, list):
            stack.extend((item, where + [("item", i)]) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                stack.append((item, where + [("key", key)]))
                stack.append((key, where + [("in key", key)]))
    return None


def _surrogate_error(path: Path, obj: Any, found: tuple[list[tuple[str, Any]], str, int]) -> MelonDataError:
    where, value, position = found
    parts = [str(path)]
    if isinstance(obj, list) and where and where[0][0] == "item":
        parts[0] = _where(path, where[0][1], obj[where[0][1]])
        where = where[1:]
        if where and where[0][0] == "key":
            parts.append(f"field {where[0][1]!r:.40}")
            where = where[1:]
    parts += [f"item {step}" if kind == "item" else f"key {step!r:.40}" for kind, step in where]
    what = "key" if where and where[-1][0] == "in key" else "string"
    return MelonDataError(
        f"{': '.join(parts)}: {what} holds a lone UTF-16 surrogate {value[position]!r} at position {position}, "
        "not valid Unicode (no UTF-8 file can hold it)"
    )


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing, unreadable, empty or malformed file is a MelonDataError naming it."""
    path = Path(path)
    if not path.exists():
        raise MelonDataError(f"{path}: no such file")
    if not path.is_file():
        raise MelonDataError(f"{path}: not a regular file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        obj = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise MelonDataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise MelonDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except _NotJSON as e:
        raise MelonDataError(f"{path}: not valid JSON ({e})") from None
    except ValueError as e:  # an integer literal beyond Python's 4,300-digit conversion limit
        raise MelonDataError(f"{path}: not valid JSON ({str(e).split(':')[0]})") from None
    except RecursionError:
        raise MelonDataError(f"{path}: not valid JSON (arrays/objects nested too deeply)") from None
    except OSError as e:
        raise MelonDataError(f"{path}: cannot read ({e.strerror or e})") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        raise _surrogate_error(path, obj, _lone_surrogate(obj))
    return obj


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename): never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions open() would give, not mkstemp's 0600
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


def song_meta_path(meta: str | os.PathLike) -> Path:
    """``--meta`` as every entry point reads it: a data folder holding ``song_meta.json``, or the file itself."""
    meta = Path(meta)
    return meta / "song_meta.json" if meta.is_dir() else meta


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
        if not GENRE_CODE_RE.fullmatch(code):
            raise MelonDataError(f"{path}: key {code!r:.40}: expected a genre code GNxxxx")
        if _check_str(name):
            raise MelonDataError(f"{path}: key {code!r:.40}: {_check_str(name)}")
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
