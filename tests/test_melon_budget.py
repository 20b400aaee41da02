"""bench.melon_budget's report on hand-made results (in process): a run ended by the budget and one ended by
its epoch count; the data config of its vocabulary cutoff."""

from __future__ import annotations

import pytest
import yaml

from bench.common import REPO
from bench.melon_budget import curve, data_config, markdown


def result(minutes):
    scores = lambda s: {"music_ndcg": s, "tag_ndcg": 2 * s, "score": 1.15 * s}  # noqa: E731
    return {"minutes": 25.0, "np": 2, "questions": 2000, "command": "python -m bench.melon_budget",
            "systems": {"dae": scores(0.1), "item_cf": scores(0.2)},
            "train": {"minutes": minutes, "command_wall_s": 1214.1, "steps": 400, "steps_per_epoch": 200,
                      "global_batch": 256},
            "curve": curve("[dae] epoch 1: loss 10.5, lr 1.0e-03, 229 playlists/s; validation music 0.0160 tag 0.2254 "
                           "score 0.0474 (best)\n[dae] epoch 2: loss 9.8, lr 9.7e-04, 277 playlists/s; validation "
                           "music 0.0731 tag 0.3335 score 0.1122 (best)")}


@pytest.mark.parametrize("minutes, words", [
    (26.3, ["after 25 minutes of training", "Training: 26.3 min for 400 steps"]),
    (None, ["after 400 steps of training", "20.2 min of horovodrun wall time", "ended by its epoch count"]),
])
def test_the_report_says_how_the_run_ended(minutes, words):
    text = markdown(result(minutes))
    for word in words:
        assert word in text, (word, text)
    assert "| dae | 0.1000 | 0.2000 | 0.1150 | 0.500 |" in text
    assert "| 2 | 9.8000 | 277 | 0.0731 | 0.3335 | 0.1122 |" in text


def test_the_ensemble_report_divides_by_the_ensemble_without_the_dae():
    from bench.melon_ensemble import markdown as ensemble_markdown

    def scores(s):
        types = {t: {"score": s * k} for t, k in (("songs-only", 1.0), ("title-only", 0.5))}
        return {"music_ndcg": s, "tag_ndcg": 2 * s, "score": 1.15 * s, "by_type": types}
    text = ensemble_markdown({"questions": 2000, "command": "python -m bench.melon_ensemble", "dae_run": "runs/x",
                              "dae_trained": "1000 steps", "systems": {"ensemble": scores(0.2),
                                                                       "ensemble_without_dae": scores(0.16),
                                                                       "dae (melon_budget)": {"music_ndcg": 0.1,
                                                                                              "tag_ndcg": 0.2,
                                                                                              "score": 0.115}}})
    assert "| ensemble | 0.2000 | 0.4000 | 0.2300 | 1.250 |" in text
    assert "| ensemble_without_dae | 0.1600 | 0.3200 | 0.1840 | 1.000 |" in text
    assert "| ensemble | 0.2000 | 0.1000 |" in text  # by type: songs-only, title-only
    assert "dae (melon_budget) | 0.1000 |" in text and text.count("| dae (melon_budget) |") == 1


def test_the_vocabulary_cutoff_changes_only_the_song_share_of_the_data_config(tmp_path):
    default = yaml.safe_load((REPO / "configs/data.yaml").read_text())
    written = yaml.safe_load(data_config(0.8, tmp_path / "configs/data.yaml").read_text())
    assert written["vocab"]["song_recall"] == 0.8 and default["vocab"]["song_recall"] != 0.8
    written["vocab"]["song_recall"] = default["vocab"]["song_recall"]
    assert written == default
