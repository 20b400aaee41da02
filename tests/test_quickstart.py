"""The main job, launch/quickstart.sh, at tiny scale: every stage runs, the three trainings run on two ranks
that end on the same weights, fine-tuning starts from the pretraining, and every model is scored on the
report half. The run is the session's ``quickstart_tiny`` (tests/conftest.py), which the inference tests and
the tiny benchmark read too; and the command bench.quality starts when it has no finished run to reuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import (FLOOR_ENSEMBLE_OVER_PEER, FLOOR_ENSEMBLE_OVER_POPULAR, FLOOR_MEMBER_OVER_POPULAR,
                      QUICKSTART_EPOCHS)
from data.task import parts

STAGES = {"generate", "split", "preprocess", "dae", "title_pretrain", "title_finetune", "word2vec", "neighbours",
          "playlists", "cnn", "audio_index", "blend", "popular", "ensemble", "peer"}  # in timings.json (at least these)
SCORED = ("ensemble", "dae", "title", "word2vec", "playlist_cf", "popular")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first test to request the tiny main job waits for all of it
def test_the_tiny_main_job_trains_on_two_synced_ranks_and_scores_every_model(quickstart_tiny):
    from models.export import read_export

    run = quickstart_tiny
    log = (run.parent / "quickstart-tiny.log").read_text(encoding="utf-8")
    assert "preprocessing with mpirun -np 2" in log and "DAE: horovodrun -np 2" in log
    for tag, epochs in zip(("dae", "title_pretrain", "title_finetune"), QUICKSTART_EPOCHS):
        assert re.findall(rf"\[{tag}\] epoch (\d+): loss", log) == [str(e) for e in range(1, int(epochs) + 1)], tag
    for tag in ("dae", "title_pretrain", "title_finetune", "word2vec", "cnn"):
        checksums = re.search(rf"\[{tag}\] weight checksums by rank: \[([^\]]+)\]", log).group(1).split(", ")
        assert len(checksums) == 2 and len(set(checksums)) == 1, tag  # identical weights on both ranks
    timings = json.loads((run / "timings.json").read_text(encoding="utf-8"))
    assert STAGES <= set(timings) and all(isinstance(s, int) and s >= 0 for s in timings.values())
    _, config = read_export(run / "title-finetune/export")
    assert config["model"] == "title_finetune" and Path(config["initialised_from"]).resolve() == (run / "title-pretrain").resolve()
    for member in ("neighbours", "playlists"):
        assert (run / member / "export/config.json").is_file()
    audio = json.loads((run / "blend.json").read_text(encoding="utf-8"))["audio"]  # the audio member's fitted tail
    assert set(audio["slots"]) >= {"songs-only", "songs+tags", "tags-only", "title-only"} and (run / "cnn/audio_index.npz").is_file()
    assert "mel CNN (tags from audio): horovodrun -np 2" in log
    questions = json.loads((run / "split/questions/val.json").read_text(encoding="utf-8"))
    table = (run / "scores/table.md").read_text(encoding="utf-8")
    for model in SCORED:
        scores = json.loads((run / f"scores/{model}.json").read_text(encoding="utf-8"))
        assert scores["part"] == "report" and scores["n"] == len(parts(questions)["report"]), model
        assert 0.0 <= scores["score"] <= 1.0 and model in table, model
    assert "done: results in" in log


def test_bench_quality_runs_quickstart_with_its_schedule_unless_a_finished_run_is_there(tmp_path, monkeypatch):
    """bench.quality's prepare: the quickstart command it starts (the tiny benchmark test reuses the session's
    run instead), and no command at all for a finished run folder."""
    import bench.quality

    started = []
    monkeypatch.setattr(bench.quality, "measured", lambda cmd, log_path, env=None: started.append((cmd, log_path)) or {})
    run = tmp_path / "runs/quickstart-tiny"
    bench.quality.prepare(run, "tiny", 3, False, [1, 2, 3], 7)
    assert started == [(["bash", "launch/quickstart.sh", "--scale", "tiny", "--seed", "3", "--out", str(run),
                         "--dae-epochs", "1", "--pretrain-epochs", "2", "--finetune-epochs", "3", "--steps-per-epoch", "7"],
                        tmp_path / "runs/quickstart-tiny.log")]
    for path in ["scores/table.md", "playlists/export/config.json"] + [
            f"results/{m}.json" for m in ("ensemble", "dae", "title", "word2vec", "playlist_cf", "popular")]:
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("{}", encoding="utf-8")
    assert bench.quality._quickstart_finished(run)  # what quickstart leaves: a finished run
    started.clear()
    bench.quality.prepare(run, "tiny", 3, False, [1, 2, 3], 7)
    assert started == []  # reused as it is


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_tiny_main_job_clears_the_quality_floor(quickstart_tiny):
    """A change that breaks ranking (the ensemble falling to popularity, a member ranking noise) turns this red."""
    score = {m: json.loads((quickstart_tiny / f"scores/{m}.json").read_text(encoding="utf-8"))["score"] for m in SCORED}
    assert score["ensemble"] >= FLOOR_ENSEMBLE_OVER_POPULAR * score["popular"], score
    assert score["ensemble"] >= FLOOR_ENSEMBLE_OVER_PEER * score["playlist_cf"], score
    for member in ("dae", "title", "word2vec"):
        assert score[member] >= FLOOR_MEMBER_OVER_POPULAR * score["popular"], (member, score)
