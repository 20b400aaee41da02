"""Hostile input: the Melon readers, the evaluator and the CLIs that write files.

Every input either loads (and then exactly as written), scores, or is refused with the project's own
error: :class:`data.melon.MelonDataError` from the readers, :class:`data.task.InvalidResults` from
the evaluator, each one line naming the file (readers), the record and the field. No KeyError,
TypeError, RecursionError, UnicodeError... and no partial output file from a CLI that fails.

The bulk runs under hypothesis against independent oracles of the schema (``*_ORACLE`` below, written
from the official schema, not from ``data/melon.py``): the reader must accept exactly what the oracle
accepts. A handful of cases run the CLIs as real subprocesses.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import REPO, run_module
from data.melon import (
    MelonDataError, load_genres, load_playlists, load_results, load_song_meta, read_json, write_json,
)
from evaluate import table
from data.task import IDCG, InvalidResults, ndcg
from data.ndcg import evaluate

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
INT64 = 2**63


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------

LONE_SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d", "x\udbff"])
ODD_TEXT = st.sampled_from([
    "", " ", "\x00", "\n", "a\r\nb", "\t", "\x1b[31mred", "\u202etxet", "\ufeff", "😀🎵", "👩‍👩‍👧",
    "새벽 감성", "a\u0301", "\u0000\u0001\u007f", "'\"\\", "x" * 300, "٢٠١٩", "１２３",
])
CLEAN_TEXT = st.one_of(st.text(max_size=12), ODD_TEXT)  # any Unicode but lone surrogates (st.text excludes Cs)
ANY_TEXT = st.one_of(CLEAN_TEXT, LONE_SURROGATES)
ODD_INTS = st.one_of(
    st.integers(-5, 50),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, INT64 - 1, INT64, -INT64, -INT64 - 1, 10**30]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), ODD_INTS,
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1.0, 0.0, -0.0, 1e300, 2.5]),
    ANY_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12
)

CLEAN_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), ODD_INTS, st.floats(allow_nan=False, allow_infinity=False), CLEAN_TEXT),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(CLEAN_TEXT, inner, max_size=4), max_leaves=12,
)

digits = lambda n: st.integers(0, 10**n - 1).map(lambda v: f"{v:0{n}d}")  # noqa: E731
UPDT_DATES = st.builds(lambda y, mo, d, h, mi, s, frac: f"{y}-{mo}-{d} {h}:{mi}:{s}{frac}",
                       digits(4), digits(2), digits(2), digits(2), digits(2), digits(2),
                       st.sampled_from(["", ".000", ".5", ".123456"]))
BAD_DATES = st.sampled_from(["2019/12/19 18:04:43.000", "2019-12-19", "2019-12-19 18:04:43.000\n",
                             "٢٠١٩-12-19 18:04:43.000", " 2019-12-19 18:04:43.000", "2019-12-19T18:04:43",
                             "20190101", "2019010", "201901011", "2019010\n", "GN0100\n", "GN01OO", "gn0100"])
IDS = st.integers(0, INT64 - 1)
SMALL_IDS = st.integers(0, 500)

PLAYLIST = st.fixed_dictionaries(
    {"id": st.one_of(SMALL_IDS, IDS), "plylst_title": CLEAN_TEXT,
     "tags": st.lists(CLEAN_TEXT, unique=True, max_size=5),
     "songs": st.lists(st.one_of(SMALL_IDS, IDS), unique=True, max_size=8),
     "like_cnt": st.integers(-INT64, INT64 - 1), "updt_date": UPDT_DATES},
    optional={"extra": CLEAN_JSON},
)
PLAYLISTS = st.lists(PLAYLIST, max_size=5, unique_by=lambda p: p["id"])
GENRE_CODES = digits(4).map(lambda d: f"GN{d}")
SONG = st.fixed_dictionaries({
    "album_id": IDS, "album_name": CLEAN_TEXT, "song_name": CLEAN_TEXT,
    "artists": st.lists(st.tuples(SMALL_IDS, CLEAN_TEXT), max_size=3),
    "song_gn_gnr_basket": st.lists(GENRE_CODES, max_size=3), "song_gn_dtl_gnr_basket": st.lists(GENRE_CODES, max_size=3),
    "issue_date": digits(8),
})


def _song_meta(songs: list[dict]) -> list[dict]:
    out = []
    for index, s in enumerate(songs):
        s = dict(s)
        artists = s.pop("artists")
        out.append({"id": index, **s, "artist_id_basket": [a for a, _ in artists],
                    "artist_name_basket": [n for _, n in artists]})
    return out


SONG_METAS = st.lists(SONG, max_size=5).map(_song_meta)
RESULTS = st.lists(st.fixed_dictionaries({"id": IDS, "songs": st.lists(IDS, max_size=6),
                                          "tags": st.lists(CLEAN_TEXT, max_size=4)}),
                   max_size=5, unique_by=lambda r: r["id"])
GENRES = st.dictionaries(GENRE_CODES, CLEAN_TEXT, max_size=5)


def _has_nan(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False


# --------------------------------------------------------------------------------------------------
# Oracles: the official schema, written independently of data/melon.py
# --------------------------------------------------------------------------------------------------

def _int64(v, non_negative: bool) -> bool:
    return type(v) is int and (0 if non_negative else -INT64) <= v < INT64


def _text(v) -> bool:
    return type(v) is str and not any(0xD800 <= ord(c) <= 0xDFFF for c in v)


def _list(v, item, unique=False) -> bool:
    return type(v) is list and all(item(x) for x in v) and (not unique or len(set(v)) == len(v))


def _form(pattern: str):
    return lambda v: type(v) is str and re.fullmatch(pattern, v) is not None


_ID = lambda v: _int64(v, True)  # noqa: E731
_GENRE = _form("GN[0-9]{4}")

PLAYLIST_ORACLE = {
    "id": _ID, "plylst_title": _text, "tags": lambda v: _list(v, _text, unique=True),
    "songs": lambda v: _list(v, _ID, unique=True), "like_cnt": lambda v: _int64(v, False),
    "updt_date": _form("[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?"),
}
SONG_ORACLE = {
    "id": _ID, "album_id": _ID, "album_name": _text, "artist_id_basket": lambda v: _list(v, _ID),
    "artist_name_basket": lambda v: _list(v, _text), "song_name": _text,
    "song_gn_gnr_basket": lambda v: _list(v, _GENRE), "song_gn_dtl_gnr_basket": lambda v: _list(v, _GENRE),
    "issue_date": _form("[0-9]{8}"),
}
RESULT_ORACLE = {"id": _ID, "songs": lambda v: _list(v, _ID), "tags": lambda v: _list(v, _text)}


def first_failure(records, oracle: dict, optional=(), song_meta=False):
    """(record index, what is wrong) of the first record a reader must refuse, or None if it must load."""
    if type(records) is not list:
        return ("file", "expected a JSON list")
    seen = set()
    for index, r in enumerate(records):
        if type(r) is not dict:
            return (index, "expected an object")
        bad = {f for f, ok in oracle.items() if (f not in r and f not in optional) or (f in r and not ok(r[f]))}
        if bad:
            return (index, bad)
        if r["id"] in seen:
            return (index, "duplicate id")
        seen.add(r["id"])
    if song_meta:
        for index, r in enumerate(records):
            if r["id"] != index:
                return (index, {"id"})
            if len(r["artist_id_basket"]) != len(r["artist_name_basket"]):
                return (index, "differ in length")
    return None


def assert_one_clear_line(message: str, *names) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) < 600, f"{len(message)}-character message"
    for name in names:
        assert str(name) in message, (name, message)


def _lone(value) -> bool:
    """Whether a lone surrogate is anywhere in value (strings, keys, at any depth)."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(_lone(v) for v in value)
    if isinstance(value, dict):
        return any(_lone(k) or _lone(v) for k, v in value.items())
    return False


def write_text(path: Path, records, ensure_ascii: bool = True) -> None:
    """Write records as JSON the way a careless tool might (Python's json writes NaN and lone surrogates)."""
    path.write_text(json.dumps(records, ensure_ascii=ensure_ascii), encoding="utf-8")


def expected_failure(records, oracle, optional=(), song_meta=False):
    if _has_nan(records):
        return ("file", "not valid JSON")
    if _lone(records):  # anywhere in the file, extra fields included: named by its record when there is one
        where = next((i for i, r in enumerate(records) if _lone(r)), "file") if isinstance(records, list) else "file"
        return (where, "lone UTF-16 surrogate")
    return first_failure(records, oracle, optional, song_meta)


def check_reader(loader, path: Path, records, oracle, optional=(), song_meta=False, ensure_ascii=True) -> None:
    write_text(path, records, ensure_ascii)
    expected = expected_failure(records, oracle, optional, song_meta)
    event("loads" if expected is None else f"refused: {expected[1] if isinstance(expected[1], str) else 'field'}")
    try:
        got = loader(path)
    except MelonDataError as e:
        message = str(e)
        assert expected is not None, f"valid input refused: {message}"
        assert_one_clear_line(message, path)
        where, what = expected
        if where != "file":
            assert re.search(rf"record {where}\b", message), (expected, message)
        if isinstance(what, set):
            named = re.findall(r"field '(\w+)'", message)
            assert named and named[0] in what, (expected, message)
        else:
            assert what in message, (expected, message)
    else:
        assert expected is None, f"invalid input accepted ({expected}): {records!r:.300}"
        assert got == records


# --------------------------------------------------------------------------------------------------
# Mutations: one hostile change to an otherwise valid file
# --------------------------------------------------------------------------------------------------

def mutate(data, records: list, fields: list[str]) -> list:
    records = json.loads(json.dumps(records))  # a deep copy
    op = data.draw(st.sampled_from([
        "set", "set", "set", "delete", "extra", "duplicate", "not-a-record", "list-item", "bad-form", "whole",
    ]), label="op")
    if op == "whole":
        return data.draw(st.one_of(JSON_VALUES, st.just([]), st.just({})), label="whole file")
    if not records:
        records.append({})
        return records
    i = data.draw(st.integers(0, len(records) - 1), label="record")
    field = data.draw(st.sampled_from(fields), label="field")
    if op == "set":
        records[i][field] = data.draw(st.one_of(SCALARS, JSON_VALUES), label="value")
    elif op == "delete":
        records[i].pop(field, None)
    elif op == "extra":
        records[i][data.draw(CLEAN_TEXT, label="extra key")] = data.draw(JSON_VALUES, label="extra value")
    elif op == "duplicate":
        records.insert(data.draw(st.integers(0, len(records)), label="at"), dict(records[i]))
    elif op == "not-a-record":
        records[i] = data.draw(SCALARS | st.lists(SCALARS, max_size=3), label="non-record")
    elif op == "list-item":
        value = records[i].get(field)
        if isinstance(value, list):
            item = data.draw(st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.just(value[0] if value else 0)),
                             label="item")
            value.insert(data.draw(st.integers(0, len(value)), label="pos"), item)
        else:
            records[i][field] = [data.draw(SCALARS, label="item")]
    elif op == "bad-form":
        records[i][field] = data.draw(BAD_DATES | ODD_TEXT, label="bad form")
    return records


PLAYLIST_FIELD_NAMES = list(PLAYLIST_ORACLE)
SONG_FIELD_NAMES = list(SONG_ORACLE)


@SETTINGS
@given(records=PLAYLISTS)
def test_valid_playlists_load_exactly(scratch, records):
    """Anything in the schema loads, unchanged: any Unicode title, extra fields, empty lists, 0 records."""
    check_reader(load_playlists, scratch / "train.json", records, PLAYLIST_ORACLE, {"like_cnt"}, ensure_ascii=False)


@settings(SETTINGS, max_examples=100)
@given(records=PLAYLISTS, data=st.data())
def test_hostile_playlists_are_refused_by_record_and_field(scratch, records, data):
    check_reader(load_playlists, scratch / "val.json", mutate(data, records, PLAYLIST_FIELD_NAMES),
                 PLAYLIST_ORACLE, {"like_cnt"})


@settings(SETTINGS, max_examples=80)
@given(songs=SONG_METAS, data=st.data())
def test_hostile_song_meta_is_refused_by_record_and_field(scratch, songs, data):
    check_reader(load_song_meta, scratch / "song_meta.json", mutate(data, songs, SONG_FIELD_NAMES),
                 SONG_ORACLE, song_meta=True)


@settings(SETTINGS, max_examples=80)
@given(results=RESULTS, data=st.data())
def test_hostile_results_are_refused_by_record_and_field(scratch, results, data):
    check_reader(load_results, scratch / "results.json", mutate(data, results, ["id", "songs", "tags"]), RESULT_ORACLE)


@SETTINGS
@given(genres=GENRES, extra=st.one_of(st.none(), st.tuples(ANY_TEXT | BAD_DATES, JSON_VALUES)))
def test_hostile_genre_table(scratch, genres, extra):
    if extra is not None:
        genres = {**genres, extra[0]: extra[1]}
    path = scratch / "genre_gn_all.json"
    write_text(path, genres)
    valid = not _has_nan(genres) and not _lone(genres) and all(_GENRE(k) and _text(v) for k, v in genres.items())
    try:
        got = load_genres(path)
    except MelonDataError as e:
        assert not valid, f"valid input refused: {e}"
        assert_one_clear_line(str(e), path)
    else:
        assert valid and got == genres


# --------------------------------------------------------------------------------------------------
# Files that are not (complete) JSON
# --------------------------------------------------------------------------------------------------

LOADERS = [load_playlists, load_song_meta, load_results, load_genres]


@settings(SETTINGS, max_examples=80)
@given(records=PLAYLISTS, data=st.data())
def test_truncated_files_are_refused_naming_the_file(scratch, records, data):
    """Every proper prefix of a valid file (cut mid-number, mid-string, mid-UTF-8 character) is refused."""
    blob = json.dumps(records, ensure_ascii=False).encode("utf-8")
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    path = scratch / "cut.json"
    path.write_bytes(blob[:cut])
    loader = data.draw(st.sampled_from(LOADERS), label="loader")
    with pytest.raises(MelonDataError) as err:
        loader(path)
    assert_one_clear_line(str(err.value), path)
    assert "not valid JSON" in str(err.value) or "not UTF-8" in str(err.value)


NASTY_BYTES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b" \n\t", b"\xef\xbb\xbf[]", b"\xff\xfe[\x00]\x00", b"[\"\xc3\x28\"]", b"\x00",
                     b"NaN", b"[Infinity]", b"[-Infinity]", b"[1e999]", b"null", b"true", b"\"[]\"",
                     b"[{}]", b"{}", b"[[]]", b"[{\"id\": 1, \"id\": 2}]", b"[1,]", b"[01]", b"/* c */ []",
                     b"[\"\\ud800\"]", b"{\"GN0100\": \"\\udfff\"}"]),
    JSON_VALUES.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b"{\"a\":" * n + b"1" + b"}" * n),
)


@settings(SETTINGS, max_examples=100)
@given(blob=NASTY_BYTES, loader=st.sampled_from(LOADERS))
@example(blob=b"[" * 100_000 + b"]" * 100_000, loader=load_playlists)  # was RecursionError
@example(blob=b"[" + b"9" * 5000 + b"]", loader=load_results)  # was ValueError (int digit limit)
@example(blob=b"{\"id\": " + b"1" * 4301 + b"}", loader=load_genres)
def test_arbitrary_bytes_load_or_are_refused_naming_the_file(scratch, blob, loader):
    path = scratch / "blob.json"
    path.write_bytes(blob)
    try:
        loader(path)
    except MelonDataError as e:
        assert_one_clear_line(str(e), path)


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "absent.json", "no such file"),
    (lambda d: d, "not a regular file"),
])
def test_paths_that_are_not_files(scratch, make, words):
    for loader in LOADERS:
        with pytest.raises(MelonDataError, match=words):
            loader(make(scratch))


def test_unreadable_file():
    """A file that exists but cannot be opened (mode 000) is a MelonDataError naming it. Root opens any file,
    so as root the reader runs in a forked child that first drops to nobody (uid and gid 65534): the case
    runs, and can fail, on the machines that run the suite as root too."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="melon-unreadable-") as folder:
        os.chmod(folder, 0o755)  # nobody must reach the file (pytest's own temporary folders are 0700)
        path = Path(folder) / "locked.json"
        path.write_text("[]")
        path.chmod(0)
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            status = 1
            try:
                os.close(reader)
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                try:
                    load_playlists(path)
                    message = "loaded without an error"
                except MelonDataError as e:
                    message, status = str(e), 0
                except BaseException as e:  # noqa: BLE001 (reported to the parent)
                    message = f"{type(e).__name__}: {e}"
                os.write(writer, message.encode("utf-8", "replace"))
            finally:
                os._exit(status)
        os.close(writer)
        with os.fdopen(reader, "rb") as f:
            message = f.read().decode("utf-8")
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message  # a MelonDataError, not PermissionError or a load
    assert message == f"{path}: cannot read (Permission denied)"
    assert_one_clear_line(message, path)


def test_documented_graceful_cases(scratch):
    """What the readers accept as it is (data/melon.py's docstring), pinned down."""
    path = scratch / "graceful.json"
    path.write_text('[{"id": 1, "id": 2, "plylst_title": "\\u0000\\u001b😀", "tags": [], "songs": [], '
                    '"updt_date": "2019-13-45 99:99:99", "x": {"y": [null]}}]', encoding="utf-8")
    (p,) = load_playlists(path)  # repeated key: the last wins; control characters kept; form, not calendar
    assert p["id"] == 2 and p["plylst_title"] == "\x00\x1b😀" and p["x"] == {"y": [None]}
    path.write_text("[]")
    assert load_playlists(path) == [] and load_song_meta(path) == [] and load_results(path) == []
    huge = {"id": 0, "plylst_title": "t" * 100_000, "tags": [f"t{i}" for i in range(10_000)],
            "songs": list(range(200_000)), "like_cnt": 0, "updt_date": "2020-01-01 00:00:00.000"}
    path.write_text(json.dumps([huge]))
    assert load_playlists(path) == [huge]


# --------------------------------------------------------------------------------------------------
# write_json: atomic for any value
# --------------------------------------------------------------------------------------------------

class Unserialisable:
    pass


@SETTINGS
@given(value=st.one_of(JSON_VALUES, st.lists(st.just(Unserialisable()), min_size=1, max_size=1)))
def test_write_json_writes_all_or_nothing(scratch, value):
    folder = scratch / "atomic"
    folder.mkdir(exist_ok=True)
    path = folder / "out.json"
    path.write_text('"previous"')
    try:
        write_json(value, path)
    except (TypeError, ValueError):  # unserialisable, or a lone surrogate that UTF-8 cannot encode
        assert path.read_text() == '"previous"'
    else:
        assert path.read_text(encoding="utf-8") == json.dumps(value, ensure_ascii=False)
    assert sorted(p.name for p in folder.iterdir()) == ["out.json"], "temporary file left behind"


# --------------------------------------------------------------------------------------------------
# The evaluator's library functions
# --------------------------------------------------------------------------------------------------

@SETTINGS
@given(gt=st.lists(st.integers(0, 400), unique=True, min_size=1, max_size=100),
       rec=st.lists(st.integers(0, 400), unique=True, max_size=150))
def test_ndcg_is_a_fraction(gt, rec):
    # unique recommendations: the official formula counts a repeated item twice (gt [0], rec [0, 0] gives
    # 1.63), and the evaluator refuses results with repeats before it computes any nDCG
    value = ndcg(gt, rec)
    assert 0.0 <= value <= 1.0 + 1e-12
    perfect = gt + [x for x in rec if x not in set(gt)]
    assert ndcg(gt, perfect) == pytest.approx(1.0)
    # base-2 logs give the same ratio: an independent check of the official formula
    dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(rec) if x in set(gt))
    assert value == pytest.approx(dcg / sum(1 / math.log2(i + 2) for i in range(len(gt))))


@pytest.mark.parametrize("n", [0, 101, 1000])
def test_ndcg_outside_the_official_table_is_refused(n):
    with pytest.raises(InvalidResults, match=f"1 to 100 relevant items, got {n}"):  # was ZeroDivision/IndexError
        ndcg(list(range(n)), [1, 2, 3])


def _valid_case(rng: random.Random, n: int):
    answers, results, questions = [], [], []
    for pid in rng.sample(range(10_000), n):
        songs = rng.sample(range(300), 130)
        tags = [f"t{i}" for i in rng.sample(range(40), 14)]
        answers.append({"id": pid, "songs": songs[:rng.randint(1, 30)], "tags": tags[:rng.randint(1, 4)],
                        "plylst_title": "", "updt_date": "2020-01-01 00:00:00.000", "like_cnt": 0})
        results.append({"id": pid, "songs": rng.sample(range(300), 100), "tags": [f"t{i}" for i in rng.sample(range(40), 10)]})
        questions.append({"id": pid, "songs": songs[100:100 + rng.randint(0, 3)], "tags": tags[10:10 + rng.randint(0, 2)],
                          "plylst_title": rng.choice(["", "  ", "비 오는 날", "😀", "\x00"])})
    rng.shuffle(results)
    return answers, results, questions


def _int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _evaluator_accepts(answers, results, questions) -> bool:
    """The official checks plus shape, written independently of data/ndcg.py."""
    def records(xs):
        return type(xs) is list and all(type(x) is dict and _int(x.get("id")) for x in xs)

    def ints(v):
        return type(v) is list and all(_int(x) for x in v)

    def strs(v):
        return type(v) is list and all(type(x) is str for x in v)

    if not (records(answers) and records(results) and answers):
        return False
    for a in answers:
        if not ("songs" in a and "tags" in a and ints(a["songs"]) and strs(a["tags"])):
            return False
        if not (1 <= len(set(a["songs"])) == len(a["songs"]) <= 100 and 1 <= len(set(a["tags"])) == len(a["tags"]) <= 10):
            return False
    for r in results:
        if not ("songs" in r and "tags" in r and ints(r["songs"]) and strs(r["tags"])):
            return False
        if not (len(set(r["songs"])) == len(r["songs"]) == 100 and len(set(r["tags"])) == len(r["tags"]) == 10):
            return False
    ids = [a["id"] for a in answers]
    if len(set(ids)) != len(ids) or sorted(r["id"] for r in results) != sorted(ids):
        return False
    if questions is not None:
        if not records(questions) or sorted(q["id"] for q in questions) != sorted(ids):
            return False
        for q in questions:
            if ("songs" in q and not ints(q["songs"])) or ("tags" in q and not strs(q["tags"])):
                return False
            if "plylst_title" in q and type(q["plylst_title"]) is not str:
                return False
    return True


def mutate_case(data, answers, results, questions):
    case = {"answers": answers, "results": results, "questions": questions}
    name = data.draw(st.sampled_from(["answers", "results", "questions"]), label="list")
    target = case[name]
    op = data.draw(st.sampled_from(["none", "set", "delete", "drop", "duplicate", "length", "repeat-item",
                                    "numpy", "not-a-record", "whole", "empty-all"]), label="op")
    field = data.draw(st.sampled_from(["id", "songs", "tags", "plylst_title"]), label="field")
    i = data.draw(st.integers(0, len(target) - 1), label="record")
    if op == "set":
        target[i][field] = data.draw(st.one_of(SCALARS, JSON_VALUES), label="value")
    elif op == "delete":
        target[i].pop(field, None)
    elif op == "drop":
        del target[i]
    elif op == "duplicate":
        target.append(json.loads(json.dumps(target[i])))
    elif op == "length" and isinstance(target[i].get(field), list):
        size = data.draw(st.sampled_from([0, 1, 9, 11, 99, 101, 150, 100_000]), label="length")
        pool = range(10**6) if field == "songs" else [f"n{k}" for k in range(max(size, 1))]
        target[i][field] = list(pool[:size]) if field == "songs" else pool[:size]
    elif op == "repeat-item" and isinstance(target[i].get(field), list) and target[i][field]:
        target[i][field][-1] = target[i][field][0]
    elif op == "numpy" and field in ("id", "songs"):  # numpy integers are integers (the trainers pass them)
        target[i][field] = np.int64(target[i][field]) if field == "id" else [np.int64(s) for s in target[i][field]]
    elif op == "not-a-record":
        target[i] = data.draw(SCALARS, label="non-record")
    elif op == "whole":
        case[name] = data.draw(SCALARS | st.just({}), label="whole")
    elif op == "empty-all":
        case = {"answers": [], "results": [], "questions": []}  # was ZeroDivisionError
    with_questions = data.draw(st.booleans(), label="with questions")
    return case["answers"], case["results"], case["questions"] if with_questions else None


@settings(SETTINGS, max_examples=100)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), data=st.data())
def test_evaluate_scores_or_refuses_with_invalid_results(seed, n, data):
    answers, results, questions = mutate_case(data, *_valid_case(random.Random(seed), n))
    valid = _evaluator_accepts(answers, results, questions)
    event("scores" if valid else "refused")
    try:
        scores = evaluate(answers, results, questions)
    except InvalidResults as e:
        assert not valid, f"valid input refused: {e}"
        assert_one_clear_line(str(e))
        return
    assert valid, "invalid input scored"
    assert scores["n"] == len(answers)
    for s in [scores, *scores.get("by_type", {}).values()]:
        assert all(0.0 <= s[k] <= 1.0 + 1e-12 for k in ("music_ndcg", "tag_ndcg", "score")), s
    if questions is not None:
        assert sum(b["n"] for b in scores["by_type"].values()) == scores["n"]
    gt = {a["id"]: a for a in answers}
    music = sum(ndcg(gt[r["id"]]["songs"], r["songs"]) for r in results) / len(results)
    assert scores["music_ndcg"] == pytest.approx(music)


SCORE = st.fixed_dictionaries({"music_ndcg": st.floats(0, 1), "tag_ndcg": st.floats(0, 1), "score": st.floats(0, 1),
                               "n": st.integers(0, 10**6)})
SCORES_FILE = st.one_of(
    st.builds(lambda s, by: {**s, "by_type": by}, SCORE, st.dictionaries(st.sampled_from(["songs-only", "empty"]), SCORE)),
    SCORE, JSON_VALUES, st.builds(lambda s, k, v: {**s, k: v}, SCORE, st.sampled_from(["score", "n", "by_type"]), JSON_VALUES),
)


@SETTINGS
@given(files=st.lists(SCORES_FILE, min_size=1, max_size=3))
def test_evaluate_table_prints_or_refuses_one_line(scratch, files):
    """python -m evaluate.table on hostile scores files: a table, or exit 2 and one error line naming the file."""
    args = []
    for i, scores in enumerate(files):
        write_text(scratch / f"scores{i}.json", scores)
        args.append(f"s{i}={scratch / f'scores{i}.json'}")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = table.main(args)
    if status == 0:
        assert err.getvalue() == "" and out.getvalue().startswith("| question type |")
    else:
        assert status == 2 and out.getvalue() == ""
        assert_one_clear_line(err.getvalue().rstrip("\n"), "error: ", "scores")


def test_idcg_table_is_the_official_one():
    assert len(IDCG) == 101 and IDCG[0] == 0 and IDCG[1] == pytest.approx(1 / math.log(2))


# --------------------------------------------------------------------------------------------------
# The CLIs, as real processes: exit 2, one line on stderr, no traceback, no partial output
# --------------------------------------------------------------------------------------------------

SONGS, TAGS = list(range(1000, 1100)), [f"x{i}" for i in range(10)]
ANSWER = {"id": 1, "plylst_title": "", "songs": [1000], "tags": ["x0"], "like_cnt": 0,
          "updt_date": "2020-01-01 00:00:00.000"}


def assert_failed_cleanly(proc, *words) -> None:
    """Exit status 2, no traceback, exactly one ``error: ...`` line (log lines may precede it)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])


EVALUATE_CASES = {
    "empty gt file": (b"", json.dumps([{"id": 1, "songs": SONGS, "tags": TAGS}]).encode(), "not valid JSON"),
    "nothing to score": (b"[]", b"[]", "rec.json scored against"),  # was ZeroDivisionError
    "truncated results": (json.dumps([ANSWER]).encode(), json.dumps([{"id": 1, "songs": SONGS, "tags": TAGS}]).encode()[:-7],
                          "not valid JSON"),
    "nested results": (json.dumps([ANSWER]).encode(), b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    "huge integer": (json.dumps([ANSWER]).encode(), b"[{\"id\": " + b"7" * 5000 + b"}]", "not valid JSON"),
    "lone surrogate": (json.dumps([ANSWER]).encode(),
                       json.dumps([{"id": 1, "songs": SONGS, "tags": TAGS[:9] + ["\ud800"]}]).encode(), "surrogate"),
    "negative id": (json.dumps([ANSWER]).encode(), json.dumps([{"id": -1, "songs": SONGS, "tags": TAGS}]).encode(),
                    "non-negative"),
    "wrong length": (json.dumps([ANSWER]).encode(),
                     json.dumps([{"id": 1, "songs": list(range(100_000)), "tags": TAGS}]).encode(), "100000 songs"),
    "duplicate songs": (json.dumps([ANSWER]).encode(),
                        json.dumps([{"id": 1, "songs": SONGS[:99] + [1000], "tags": TAGS}]).encode(), "repeated songs"),
    "not utf-8": (json.dumps([ANSWER]).encode(), b"[{\"id\": 1, \"tags\": [\"\xff\"]}]", "not UTF-8"),
    "string id": (json.dumps([dict(ANSWER, id="1\n2")]).encode(), b"[]", "expected an integer"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_cli_fails_cleanly_and_writes_nothing(tmp_path, case):
    gt_bytes, rec_bytes, words = EVALUATE_CASES[case]
    gt, rec, out = tmp_path / "gt.json", tmp_path / "rec.json", tmp_path / "scores" / "out.json"
    gt.write_bytes(gt_bytes)
    rec.write_bytes(rec_bytes)
    proc = run_module("evaluate", "--gt", gt, "--rec", rec, "--json", "--out", out, check=False)
    assert_failed_cleanly(proc, words)
    assert proc.stdout == "" and not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_evaluate_cli_out_is_the_printed_json_and_replaces_atomically(tmp_path):
    gt, rec, bad, out = (tmp_path / n for n in ("gt.json", "rec.json", "bad.json", "out.json"))
    gt.write_text(json.dumps([ANSWER]))
    rec.write_text(json.dumps([{"id": 1, "songs": SONGS, "tags": TAGS}]))
    bad.write_text(json.dumps([{"id": 1, "songs": SONGS[:3], "tags": TAGS}]))
    proc = run_module("evaluate", "--gt", gt, "--rec", rec, "--questions", gt, "--json", "--out", out)
    assert json.loads(proc.stdout) == json.loads(out.read_text())
    before = out.read_bytes()
    assert_failed_cleanly(run_module("evaluate", "--gt", gt, "--rec", bad, "--out", out, check=False), "3 songs")
    assert out.read_bytes() == before  # an old scores file survives a failed evaluation
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_failed_cleanly(run_module("evaluate", "--gt", gt, "--rec", rec, "--out", blocker / "x.json", check=False),
                          "cannot write")


def _playlist(pid, songs, tags, title="t"):
    return {"id": pid, "plylst_title": title, "songs": songs, "tags": tags, "like_cnt": 0,
            "updt_date": "2020-01-01 00:00:00.000"}


TRAIN = [_playlist(i, list(range(i, i + 150)), [f"g{j}" for j in range(i, i + 12)]) for i in range(3)]


@pytest.mark.parametrize("case", ["surrogate tag", "truncated questions", "too few songs", "out is a folder",
                                  "out under a file"])
def test_popular_cli_fails_cleanly_and_writes_nothing(tmp_path, case):
    train, questions, out = tmp_path / "train.json", tmp_path / "q.json", tmp_path / "res" / "popular.json"
    train_records, question_text = TRAIN, json.dumps([_playlist(9, [1], [])])
    words = {"surrogate tag": "surrogate", "truncated questions": "not valid JSON", "too few songs": "cannot fill",
             "out is a folder": "cannot write", "out under a file": "cannot write"}[case]
    if case == "surrogate tag":  # was a UnicodeEncodeError traceback from write_json
        train_records = TRAIN[:2] + [_playlist(5, [1], ["\udc80"])]
    elif case == "truncated questions":
        question_text = question_text[:-3]
    elif case == "too few songs":
        train_records = [_playlist(0, [1, 2], ["a"] * 1)]
    elif case == "out is a folder":
        out.mkdir(parents=True)
    else:
        out.parent.parent.joinpath("res").write_text("")
    train.write_text(json.dumps(train_records))
    questions.write_text(question_text)
    proc = run_module("inference.popular", "--train", train, "--questions", questions, "--out", out, check=False)
    assert_failed_cleanly(proc, words)
    assert not out.is_file()
    if out.parent.is_dir():
        assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_popular_cli_still_works(tmp_path):
    train, questions, out = tmp_path / "train.json", tmp_path / "q.json", tmp_path / "popular.json"
    train.write_text(json.dumps(TRAIN))
    questions.write_text(json.dumps([_playlist(9, [2], ["g2"], title="😀\x00")]))
    run_module("inference.popular", "--train", train, "--questions", questions, "--out", out)
    (r,) = json.loads(out.read_text(encoding="utf-8"))
    assert r["id"] == 9 and len(set(r["songs"])) == 100 and 2 not in r["songs"] and "g2" not in r["tags"]
