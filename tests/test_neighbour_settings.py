"""configs/neighbours.yaml, the one home of the neighbour methods' settings: read by the ensemble's neighbour
members (inference.neighbours) and by bench.peers (in process, on hand-written YAML files)."""

from __future__ import annotations

import argparse

import pytest
import yaml

from inference.neighbours import SETTINGS_FILE, SettingsError, member_settings, neighbour_settings


def write(tmp_path, change):
    raw = yaml.safe_load(SETTINGS_FILE.read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "neighbours.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def args(config, kind, **flags):
    given = {"beta": None, "k": None, "power": None, "title_weight": None, "items": None, "lam": None, **flags}
    return argparse.Namespace(config=config, kind=kind, **given)


def test_the_member_takes_its_settings_from_the_file_and_a_flag_wins(tmp_path):
    def change(raw):
        raw["playlist_cf"].update(k=50, title_weight=0.5)
        raw["ease"]["lam"] = 123.0
    path = write(tmp_path, change)
    settings = member_settings(args(path, "playlist_cf"))
    picked = (settings["kind"], settings["k"], settings["title_weight"], settings["lam"])
    assert picked == ("playlist_cf", 50, 0.5, 123.0)
    assert member_settings(args(path, "playlist_cf", k=7))["k"] == 7
    assert member_settings(args(path, "item_cf"))["title_weight"] == 1.0  # each kind its own section's weight


def test_the_peers_defaults_are_the_files():
    from bench.peers import DEFAULTS

    shipped = neighbour_settings()
    for method in ("item_cf", "playlist_cf", "ease", "als"):
        assert DEFAULTS[method] == shipped[method]
    # the member and its peer agree on every setting both have
    member = member_settings(args(SETTINGS_FILE, "ease"))
    assert (member["items"], member["lam"]) == (shipped["ease"]["n_items"], shipped["ease"]["lam"])


@pytest.mark.parametrize("change, words", [
    (lambda raw: raw["ease"].pop("lam"), "ease needs exactly the numbers ['n_items', 'lam', 'title_weight']"),
    (lambda raw: raw.pop("als"), "expected the methods"),
    (lambda raw: raw["playlist_cf"].update(k="many"), "playlist_cf needs exactly the numbers"),
])
def test_a_malformed_file_is_one_error_naming_what_is_wrong(tmp_path, change, words):
    with pytest.raises(SettingsError, match=words.replace("[", r"\[").replace("]", r"\]")):
        neighbour_settings(write(tmp_path, change))


def test_a_missing_file_is_one_error(tmp_path):
    with pytest.raises(SettingsError, match="cannot read the neighbour settings"):
        neighbour_settings(tmp_path / "none.yaml")


def test_the_item_cf_member_refuses_an_alpha_it_cannot_compute(tmp_path):
    path = write(tmp_path, lambda raw: raw["item_cf"].update(alpha=0.5))
    with pytest.raises(SettingsError, match="plain cosine"):
        member_settings(args(path, "item_cf"))
