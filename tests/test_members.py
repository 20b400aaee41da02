"""The member registry (inference/members.py): a trained member declared there, and nowhere else, is loaded
and asked by the ensemble, takes its flag in ``python -m inference`` and ``inference.fit_blend``, is weighed by
the blend, is listed for launch/quickstart.sh, and gets its rows in bench.quality (in process, on the
session's tiny work directory, with a toy member that needs no training). The same for the members that are
not trained: a neighbour kind declared there is loaded (through the registry's loader), proposes, is listed
for quickstart and gets its rows in bench.quality; the --neighbours and --audio flags and their help in the
three commands are the registry's; the audio member loads through its declaration."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from inference import members as registry
from inference.blend import Candidates


class ToyMember:
    """Proposes the least frequent songs and tags first (the reverse of popularity) to every question."""

    def __init__(self, run, context):
        sizes = context.manifest["sizes"]
        self.config = {"model": "toy"}
        # the vocabulary is sorted by training count: a later index is a rarer item, and gets more weight
        self.songs, self.tags = (np.arange(1, n + 1, dtype=np.float32) for n in (sizes["songs"], sizes["tags"]))

    def answers(self, given, has_title):
        return np.ones(len(given), dtype=bool)

    def probabilities(self, records):
        rows = len(records)
        return (np.broadcast_to(self.songs / self.songs.sum(), (rows, len(self.songs))),
                np.broadcast_to(self.tags / self.tags.sum(), (rows, len(self.tags))))


TOY = registry.Member("toy", "Toy", "--toy", "a toy run directory", ToyMember, "toy", ("toy",), "the toy member alone")


@pytest.fixture
def toy(monkeypatch):
    """The registry with the toy member added: the only change any consumer sees."""
    monkeypatch.setattr(registry, "MEMBERS", registry.MEMBERS + (TOY,))


def questions(split, n=20):
    return json.loads((split / "questions/val.json").read_text(encoding="utf-8"))[:n]


def test_the_ensemble_loads_a_registered_member_and_ranks_by_it(toy, workdirs, tiny_split, tmp_path):
    from inference.ensemble import Ensemble, Settings

    ensemble = Ensemble(workdirs[0], {"toy": tmp_path}, Settings.load())
    assert ensemble.members() == ["toy", "popular"]
    qs = questions(tiny_split)
    results = ensemble.recommend(qs, progress=False)
    songs = [s for s, _ in json.loads((workdirs[0] / "vocab.json").read_text(encoding="utf-8"))["songs"]]
    rarest = set(songs[-len(songs) // 2:])
    for q, r in zip(qs, results):
        assert len(r["songs"]) == 100 and not set(r["songs"]) & set(q["songs"])
        # its own scores rank (the only member): the first answer is among the rarer half of the vocabulary
        assert r["songs"][0] in rarest, (q["id"], r["songs"][:5])


def test_an_unknown_member_is_refused(workdirs, tmp_path):
    from inference.ensemble import Ensemble, Settings

    with pytest.raises(ValueError, match="no trained member called toy"):
        Ensemble(workdirs[0], {"toy": tmp_path}, Settings.load())


def test_python_m_inference_and_fit_blend_take_its_flag(toy, workdirs, tiny_split, tmp_path, capsys):
    from inference.__main__ import main as infer
    from inference.fit_blend import main as fit_blend

    work, split = workdirs[0], tiny_split
    blend = tmp_path / "blend.json"
    assert fit_blend(["--questions", str(split / "questions/val.json"), "--answers", str(split / "answers/val.json"),
                      "--work", str(work), "--toy", str(tmp_path), "--out", str(blend), "--method", "grid"]) == 0
    assert json.loads(blend.read_text(encoding="utf-8"))["members"] == ["toy", "popular"]
    out = tmp_path / "results.json"
    assert infer(["--questions", str(split / "questions/val.json"), "--work", str(work), "--toy", str(tmp_path),
                  "--blend", str(blend), "--out", str(out), "--no-progress"]) == 0
    assert len(json.loads(out.read_text(encoding="utf-8"))) == len(questions(split, None))
    with pytest.raises(SystemExit):
        infer(["--questions", str(split / "questions/val.json"), "--work", str(work), "--out", str(out)])
    assert "give at least one of --dae, --title, --word2vec, --toy, --neighbours" in capsys.readouterr().err


def test_quickstart_reads_its_flag_and_folder(toy, capsys):
    """launch/quickstart.sh builds its member flags, the members alone and its score table from these lines."""
    assert registry.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dae --dae dae" and lines[-1] == "toy --toy toy"


def test_bench_quality_runs_the_ensemble_without_it_and_it_alone(toy):
    from bench import quality

    systems = quality.neural_systems()
    assert "toy" in systems["ensemble"][0] and systems["toy"] == (("toy",), None)
    assert "toy" not in systems["ensemble_without_toy"][0] and "dae" in systems["ensemble_without_toy"][0]
    assert quality.members()["toy"] == ("--toy", "toy", ("toy",))
    assert quality.descriptions()["toy"] == "the toy member alone"
    assert "Toy" in quality.descriptions()["ensemble"]


# ------------------------------------------------------------------ the members that are not trained

class ToyNeighbour:
    """A neighbour member of kind toy_cf: proposes the least frequent unblocked songs and tags first."""
    config = {"kind": "toy_cf"}

    def candidates(self, records, blocked_songs, blocked_tags, k_songs, k_tags):
        out = []
        for blocked, k in ((blocked_songs, k_songs), (blocked_tags, k_tags)):
            scores = np.where(blocked, 0.0, np.arange(1, blocked.shape[1] + 1, dtype=np.float64)[None, :])
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            values = np.take_along_axis(scores, top, axis=1)
            out += [np.where(values > 0, top, -1), values]
        return Candidates(*out)


TOY_KIND = registry.NeighbourKind("toy_cf", "toy", "toys", "the toy neighbour member alone")


@pytest.fixture
def toy_kind(monkeypatch):
    """The registry with a neighbour kind toy_cf (quickstart folder "toys") whose runs load as ToyNeighbour."""
    monkeypatch.setattr(registry, "NEIGHBOUR_KINDS", registry.NEIGHBOUR_KINDS + (TOY_KIND,))
    monkeypatch.setattr(registry, "NEIGHBOURS", dataclasses.replace(registry.NEIGHBOURS,
                                                                    load=lambda run, context: ToyNeighbour()))


def test_the_registry_declares_every_kind_inference_neighbours_builds():
    from inference.neighbours import KINDS

    assert [k.name for k in registry.NEIGHBOUR_KINDS] == list(KINDS)
    assert [k.name for k in registry.quickstart_kinds()] == ["item_cf", "playlist_cf"]


def test_the_ensemble_loads_a_neighbour_kind_through_the_registry_and_ranks_by_it(toy_kind, workdirs, tiny_split,
                                                                                   tmp_path):
    from inference.ensemble import Ensemble, Settings

    ensemble = Ensemble(workdirs[0], {}, Settings.load(), [tmp_path])
    assert ensemble.members() == ["toy_cf", registry.POPULARITY.name]
    qs = questions(tiny_split)
    songs = [s for s, _ in json.loads((workdirs[0] / "vocab.json").read_text(encoding="utf-8"))["songs"]]
    rarest = set(songs[-len(songs) // 2:])
    for q, r in zip(qs, ensemble.recommend(qs, progress=False)):
        assert len(r["songs"]) == 100 and r["songs"][0] in rarest, (q["id"], r["songs"][:5])


def test_the_ensemble_refuses_a_neighbour_kind_the_registry_does_not_declare(monkeypatch, workdirs, tmp_path):
    from inference.ensemble import Ensemble, Settings
    from inference.exports import ExportError

    monkeypatch.setattr(registry, "NEIGHBOURS", dataclasses.replace(registry.NEIGHBOURS,
                                                                    load=lambda run, context: ToyNeighbour()))
    with pytest.raises(ExportError, match="no neighbour kind called toy_cf"):
        Ensemble(workdirs[0], {}, Settings.load(), [tmp_path])


def test_the_ensemble_loads_the_audio_member_through_the_registry(monkeypatch, workdirs, tmp_path):
    from inference.ensemble import Ensemble, Settings

    loaded = []
    monkeypatch.setattr(registry, "AUDIO", dataclasses.replace(
        registry.AUDIO, load=lambda run, context: loaded.append((run, sorted(context.index))) or "the audio member"))
    ensemble = Ensemble(workdirs[0], {}, Settings.load(), [], audio_run=tmp_path)
    assert ensemble.audio == "the audio member" and loaded == [(tmp_path, ["song_artists", "songs", "tags"])]


@pytest.mark.parametrize("command", ["inference.__main__", "inference.fit_blend", "inference.recommend"])
def test_every_command_takes_the_registrys_neighbour_and_audio_flags(command, monkeypatch, capsys):
    """--help lists each registered flag with the registry's help (a changed declaration shows in all three);
    recommend has no blend file, so no audio member."""
    import importlib

    monkeypatch.setattr(registry, "NEIGHBOURS", dataclasses.replace(registry.NEIGHBOURS, flag="--toy-neighbours",
                                                                    help="TOYNEIGHBOURSHELP"))
    monkeypatch.setattr(registry, "AUDIO", dataclasses.replace(registry.AUDIO, flag="--toy-audio", help="TOYAUDIOHELP"))
    with pytest.raises(SystemExit):
        importlib.import_module(command).main(["--help"])
    text = capsys.readouterr().out
    for member in registry.MEMBERS:
        assert member.flag in text, member.flag
    assert "--toy-neighbours" in text and "TOYNEIGHBOURSHELP" in text and "--neighbours" not in text
    has_audio = command != "inference.recommend"
    assert ("--toy-audio" in text and "TOYAUDIOHELP" in text) == has_audio and "--audio" not in text


def test_the_missing_members_error_names_the_registrys_neighbour_flag(monkeypatch, capsys):
    """The "give at least one of" check names the registry's neighbour flag."""
    from inference.__main__ import main as infer

    monkeypatch.setattr(registry, "NEIGHBOURS", dataclasses.replace(registry.NEIGHBOURS, flag="--toy-neighbours"))
    with pytest.raises(SystemExit):
        infer(["--questions", "q.json", "--work", "w", "--out", "o.json"])
    assert "give at least one of --dae, --title, --word2vec, --toy-neighbours" in capsys.readouterr().err


def test_quickstart_reads_the_neighbour_kinds_and_the_audio_member(toy_kind, capsys):
    """launch/quickstart.sh builds each neighbour kind with a folder into it, and gives it and the audio member
    to fit_blend and the ensemble, from these lines."""
    assert registry.main(["--neighbours"]) == 0
    assert capsys.readouterr().out.splitlines() == ["item_cf --neighbours neighbours",
                                                    "playlist_cf --neighbours playlists", "toy_cf --neighbours toys"]
    assert registry.main(["--audio"]) == 0
    assert capsys.readouterr().out.splitlines() == ["audio --audio cnn"]


def test_bench_quality_runs_a_neighbour_kind_in_the_ensemble_without_it_and_alone(toy_kind, tmp_path):
    from bench import quality

    systems = quality.neural_systems()
    assert "toy_cf" in systems["ensemble"][0] and "toy_cf" in systems["ensemble_without_neural"][0]
    assert "toy_cf" not in systems["ensemble_without_neighbours"][0] and systems["toys"] == (("toy_cf",), None)
    assert quality.members()["toy_cf"] == ("--neighbours", "toys", ("toys",))
    described = quality.descriptions()
    assert described["toys"] == "the toy neighbour member alone" and "and toy neighbours" in described["ensemble"]
    assert quality.stage_folders()["toys"] == "toys"
    # its build stage is one of the training stages: without its timing, the run folders' file times
    (tmp_path / "timings.json").write_text(json.dumps({k: 1 for k in quality.stage_folders() if k != "toys"}))
    assert quality.training_seconds(tmp_path)[1].startswith("the run folders' file times")


def test_bench_quality_takes_the_audio_member_and_its_file_from_the_registry(monkeypatch):
    from bench import quality

    monkeypatch.setattr(registry, "AUDIO", dataclasses.replace(registry.AUDIO, name="sound", flag="--sound",
                                                               folder="mel", requires="index.npz"))
    assert quality.members()["sound"] == ("--sound", "mel", ("cnn", "audio_index"))
    assert quality.optional_members() == {"sound": "mel/index.npz"}
    systems = quality.neural_systems()
    assert "sound" in systems["ensemble"][0] and "sound" not in systems["ensemble_without_audio"][0]
