"""The member registry (inference/members.py): a trained member declared there, and nowhere else, is loaded
and asked by the ensemble, takes its flag in ``python -m inference`` and ``inference.fit_blend``, is weighed by
the blend, is listed for launch/quickstart.sh, and gets its rows in bench.quality (in process, on the
session's tiny work directory, with a toy member that needs no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference import members as registry


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
