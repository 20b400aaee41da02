"""Schema validation of the Melon readers: every malformed record is named, nothing is dropped."""

from __future__ import annotations

import json

import pytest

from data.melon import MelonDataError, load_genres, load_playlists, load_results, load_song_meta, write_json


def playlist(**overrides):
    p = {"id": 7, "plylst_title": "새벽 감성", "tags": ["새벽"], "songs": [1, 2], "like_cnt": 3,
         "updt_date": "2019-12-19 18:04:43.000"}
    p.update(overrides)
    return p


def song(i=0, **overrides):
    s = {"id": i, "album_id": 1, "album_name": "a", "artist_id_basket": [2], "artist_name_basket": ["x"],
         "song_name": "s", "song_gn_gnr_basket": ["GN0100"], "song_gn_dtl_gnr_basket": ["GN0105"], "issue_date": "20190101"}
    s.update(overrides)
    return s


def write(tmp_path, obj, name="f.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def test_valid_playlists_load_completely(tmp_path):
    records = [playlist(id=i) for i in range(5)]
    assert load_playlists(write(tmp_path, records)) == records


@pytest.mark.parametrize(
    "bad, field, words",
    [
        (playlist(songs=[1, "2"]), "songs", "item 1: expected an integer"),
        (playlist(songs=[1, True]), "songs", "expected an integer"),
        (playlist(songs=[1, 1]), "songs", "duplicates"),
        (playlist(tags="발라드"), "tags", "expected a list"),
        (playlist(tags=[3]), "tags", "expected a string"),
        (playlist(id="7"), "id", "expected an integer"),
        (playlist(plylst_title=None), "plylst_title", "expected a string"),
        (playlist(updt_date="2019/12/19"), "updt_date", "YYYY-MM-DD"),
    ],
)
def test_malformed_playlist_names_file_record_and_field(tmp_path, bad, field, words):
    path = write(tmp_path, [playlist(id=1), bad])
    with pytest.raises(MelonDataError) as err:
        load_playlists(path)
    message = str(err.value)
    assert str(path) in message and "record 1" in message and f"'{field}'" in message and words in message


def test_missing_field_and_duplicate_id(tmp_path):
    broken = playlist(id=2)
    del broken["songs"]
    with pytest.raises(MelonDataError, match=r"record 1 \(id=2\): field 'songs' is missing"):
        load_playlists(write(tmp_path, [playlist(id=1), broken]))
    with pytest.raises(MelonDataError, match=r"record 1 \(id=1\): duplicate id \(first at record 0\)"):
        load_playlists(write(tmp_path, [playlist(id=1), playlist(id=1)]))


def test_like_cnt_is_optional_for_question_files(tmp_path):
    q = playlist()
    del q["like_cnt"]
    assert load_playlists(write(tmp_path, [q])) == [q]


@pytest.mark.parametrize("content, words", [("", "not valid JSON"), ("[{", "not valid JSON"), ('{"a": 1}', "expected a JSON list"),
                                            ("[1, 2]", "record 0: expected an object")])
def test_not_a_playlist_file(tmp_path, content, words):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(MelonDataError, match=words):
        load_playlists(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(MelonDataError, match="no such file"):
        load_playlists(tmp_path / "nope.json")


def test_song_meta_checks_ids_baskets_and_dates(tmp_path):
    assert len(load_song_meta(write(tmp_path, [song(0), song(1)]))) == 2
    with pytest.raises(MelonDataError, match=r"record 1 \(id=5\): field 'id': expected 1"):
        load_song_meta(write(tmp_path, [song(0), song(5)]))
    with pytest.raises(MelonDataError, match="'issue_date'"):
        load_song_meta(write(tmp_path, [song(0, issue_date="2019-01-01")]))
    with pytest.raises(MelonDataError, match="differ in length"):
        load_song_meta(write(tmp_path, [song(0, artist_name_basket=["x", "y"])]))
    with pytest.raises(MelonDataError, match="genre code"):
        load_song_meta(write(tmp_path, [song(0, song_gn_gnr_basket=["pop"])]))


def test_genres_and_results(tmp_path):
    assert load_genres(write(tmp_path, {"GN0100": "발라드"})) == {"GN0100": "발라드"}
    with pytest.raises(MelonDataError, match="GNxxxx"):
        load_genres(write(tmp_path, {"ballad": "발라드"}))
    with pytest.raises(MelonDataError, match=r"record 0 \(id=1\): field 'songs'"):
        load_results(write(tmp_path, [{"id": 1, "songs": ["a"], "tags": []}]))


def test_write_json_is_atomic_and_keeps_unicode(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json([{"t": "발라드"}], path)
    assert "발라드" in path.read_text(encoding="utf-8")
    with pytest.raises(TypeError):
        write_json([{"t": object()}], path)  # unserialisable: the old file stays, no temporary left behind
    assert json.loads(path.read_text(encoding="utf-8")) == [{"t": "발라드"}]
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]
