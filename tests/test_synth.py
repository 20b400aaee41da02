"""The synthetic generator: schema, the real data's statistics (tiny scale, with tolerances), date
consistency, question masking, determinism, refusal to overwrite, and learnability."""

from __future__ import annotations

import datetime as dt
import filecmp


from bench.learnability import compare
from conftest import load, run_module
from data.melon import load_dataset, load_playlists
from data.stats import REAL, compute
from data.synth import scale_sizes

FILES = ("train.json", "val.json", "test.json", "song_meta.json", "genre_gn_all.json")


def test_writes_the_five_files_in_the_official_schema(tiny_data):
    data = load_dataset(tiny_data)  # validates every record
    sizes = scale_sizes("tiny")
    assert {k: len(data[k]) for k in ("train", "val", "test")} == {k: sizes[k] for k in ("train", "val", "test")}
    assert len(data["song_meta"]) == sizes["songs"] and len(data["genres"]) == 254
    ids = [p["id"] for k in ("train", "val", "test") for p in data[k]]
    assert len(ids) == len(set(ids))
    assert all(0 <= s < sizes["songs"] for k in ("train", "val", "test") for p in data[k] for s in p["songs"])
    assert sizes == {"train": 2000, "val": 400, "test": 187, "songs": 12305}
    assert scale_sizes("melon") == {"train": 115_071, "val": 23_015, "test": 10_740, "songs": 707_989}


def test_statistics_match_the_real_data(tiny_data):
    s = compute(tiny_data)
    songs, tags = s["songs_per_playlist"], s["tags_per_playlist"]
    assert songs["min"] == 1 and songs["max"] == 200
    assert abs(songs["p25"] - 19) <= 3 and abs(songs["median"] - 30) <= 3 and abs(songs["p75"] - 54) <= 6
    assert abs(songs["mean"] - 45.9) <= 3
    assert tags["min"] == 1 and tags["max"] == 11 and tags["p25"] == 2 and tags["median"] in (3, 4) and tags["p75"] == 6
    assert abs(tags["mean"] - 4.14) <= 0.25
    assert abs(s["song_singleton_share"] - REAL["song_singleton_share"]) <= 0.06
    assert abs(s["distinct_songs_train"] / s["songs_in_meta"] - 615_142 / 707_989) <= 0.05
    assert abs(s["distinct_songs_all"] / s["songs_in_meta"] - 649_091 / 707_989) <= 0.05
    genres = s["genres_per_song"]
    assert abs(genres["1"] - 0.867) <= 0.02 and abs(genres["2"] - 0.131) <= 0.02 and genres.get("3", 0) <= 0.01
    assert abs(s["major_genres_per_playlist"]["mean"] - 6.55) <= 1.2
    assert abs(s["issue_2014_2019_share"] - 0.5) <= 0.15
    assert s["shared_title_share"] <= 0.05
    # Scale-dependent figures. With 2k playlists (1/58 of the real size) a theme's catalogue is small, so
    # the most frequent song is in a larger share of playlists than at melon scale (1.6% there, 1.9%
    # real); and a resampled tag vocabulary has more one-off tags (0.55-0.6 at melon scale).
    assert 0.005 <= s["top_song_share"] <= 0.10
    assert 0.55 <= s["tag_singleton_share"] <= 0.8
    assert s["distinct_tags_train"] > 1500  # drawn from the 29,160 real tags


def test_release_dates_are_consistent_with_a_few_real_quirks(tiny_data):
    meta = load(tiny_data / "song_meta.json")
    train = load(tiny_data / "train.json")
    issue = [m["issue_date"] for m in meta]
    assert any(d == "00000000" for d in issue) and any(d.endswith("0000") and d != "00000000" for d in issue)
    later = pairs = 0
    for p in train:
        updt = p["updt_date"][:10].replace("-", "")
        assert "2005-01-01" <= p["updt_date"][:10] <= "2020-04-23"
        for s in p["songs"]:
            if issue[s] != "00000000":
                pairs += 1
                later += issue[s] > updt
    assert 0 < later / pairs < 0.01  # almost always issued before the playlist's update, never all
    dt.datetime.strptime(train[0]["updt_date"], "%Y-%m-%d %H:%M:%S.000")


def test_val_and_test_are_leaderboard_questions_with_hidden_answers(tiny_data):
    for name in ("val", "test"):
        questions = load_playlists(tiny_data / f"{name}.json")
        answers = load_playlists(tiny_data / f"answers/{name}.json")
        assert [q["id"] for q in questions] == [a["id"] for a in answers]
        for q, a in zip(questions, answers):
            assert not set(q["songs"]) & set(a["songs"]) and not set(q["tags"]) & set(a["tags"])
            assert a["songs"] and a["tags"]
            if q["songs"]:
                assert q["plylst_title"] == ""  # song questions carry no title
        title_only = sum(1 for q in questions if not q["songs"] and not q["tags"])
        assert 0.03 <= title_only / len(questions) <= 0.15


def test_same_seed_same_bytes_and_no_overwrite(tiny_data, tmp_path):
    again = tmp_path / "again"
    run_module("data.synth", "--scale", "tiny", "--seed", "3", "--out", again)
    for name in FILES + ("answers/val.json",):
        assert filecmp.cmp(tiny_data / name, again / name, shallow=False), name
    refused = run_module("data.synth", "--scale", "tiny", "--seed", "4", "--out", again, check=False)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert filecmp.cmp(tiny_data / "train.json", again / "train.json", shallow=False)  # untouched
    run_module("data.synth", "--scale", "tiny", "--seed", "4", "--out", again, "--force")
    assert not filecmp.cmp(tiny_data / "train.json", again / "train.json", shallow=False)


def test_learnable_but_not_trivial(tiny_split):
    result = compare(tiny_split)
    assert result["popular"]["score"] < 0.15  # popularity scores low
    assert result["score_ratio"] >= 3.0  # co-occurrence scores far higher
    assert result["neighbours"]["score"] < 0.7  # and the task is not trivial


def test_stats_cli_prints_documented_json_keys(tiny_data):
    import json

    stats = json.loads(run_module("data.stats", tiny_data, "--json").stdout)
    documented = {"playlists", "songs_in_meta", "distinct_songs_train", "distinct_songs_all", "song_entries_train",
                  "songs_per_playlist", "tags_per_playlist", "distinct_tags_train", "distinct_tags_all",
                  "tag_entries_train", "tag_singleton_share", "song_singleton_share", "top_song_playlists",
                  "top_song_share", "genres_per_song", "major_genres_per_playlist", "issue_2014_2019_share",
                  "shared_title_share"}
    assert set(stats) == documented
    table = run_module("data.stats", tiny_data).stdout
    assert "real Melon" in table and "songs_per_playlist.median" in table
    missing = run_module("data.stats", tiny_data / "nothing", check=False)
    assert missing.returncode == 2 and "none of" in missing.stderr


def test_a_config_with_unknown_or_missing_keys_is_refused(tmp_path):
    from data.synth import DEFAULT_CONFIG

    config = tmp_path / "synth.yaml"
    config.write_text(DEFAULT_CONFIG.read_text().replace("hit_offset:", "hit_ofset:"))
    proc = run_module("data.synth", "--scale", "tiny", "--out", tmp_path / "out", "--config", config, check=False)
    assert proc.returncode == 2 and "missing ['hit_offset']" in proc.stderr and "unknown ['hit_ofset']" in proc.stderr
    assert not (tmp_path / "out").exists()
