"""bench.speed: the relations its figures must keep (checked on the committed bench/results/speed.json and on
edited copies of it), and the benchmark end to end at tiny scale: every step runs for real (horovodrun -np 1
and 2, mpirun preprocessing, python -m inference) and the summary's figures are the steps' own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

GiB = 1024**3
BUDGET_SECONDS, BUDGET_GB = 300.0, 8.0  # the budgets the ratios are taken against (bench/preprocess_speed.py)


def _close(value, expected, tolerance):
    """``value`` is ``expected`` as the benchmark rounds it: ``tolerance`` is half a unit of the digit it keeps,
    plus what the rounding of ``expected``'s own inputs can add."""
    return value == pytest.approx(expected, abs=tolerance)


def _within_rounding(rate: float, count: float, seconds: float, seconds_error: float, rate_error: float) -> bool:
    """Whether ``rate`` (rounded to +-rate_error) can be count / t for a t that rounds to ``seconds``
    (+-seconds_error)."""
    expected = count / seconds
    return _close(rate, expected, rate_error + expected * seconds_error / (seconds - seconds_error) + 1e-9)


def check_speed_summary(summary: dict, results) -> None:
    """What must hold between bench.speed's figures, whatever the machine measured. ``results`` is the folder
    the steps wrote their own files to."""
    steps, h = summary["steps"], summary["headline"]
    assert set(steps) == {"train_speed", "preprocess_speed", "inference_speed"}
    scale = summary["scale"]
    assert [steps[k]["file"] for k in ("train_speed", "preprocess_speed", "inference_speed")] == \
        ["train_speed.json", f"preprocess_{scale}.json", f"inference_{scale}.json"]
    for name, step in steps.items():  # the summary holds each step's own file, unchanged
        assert step["result"] == json.loads((results / step["file"]).read_text()), name
        assert step["seconds"] > 0, name
    train, pre, inf = (steps[k]["result"] for k in ("train_speed", "preprocess_speed", "inference_speed"))

    # training: both world sizes measured; the ratios are those two rates' and the FLOP count's
    rates = train["playlists_per_s"]
    assert set(rates) == {"np1", "np2"} and rates["np1"] > 0 and rates["np2"] > 0
    assert train["work"] == summary["train_work"]
    assert _close(train["scaling_efficiency_np2"], rates["np2"] / (2 * rates["np1"]), 5e-4 + 1e-9)
    assert train["gflop_per_playlist"] > 0 and train["matmul_peak_gflops"] > 0
    achieved = train["gflop_per_playlist"] * rates["np1"]  # GFLOP/playlist (3 decimals) x playlists/s
    assert _close(train["achieved_gflops_np1"], achieved, 0.05 + 5e-4 * rates["np1"] + 1e-9)
    peak = train["matmul_peak_gflops"]
    assert _close(train["achieved_over_peak"], train["achieved_gflops_np1"] / peak,
                  5e-4 + 0.05 / peak + 0.05 * train["achieved_gflops_np1"] / peak**2 + 1e-9)

    # preprocessing: one peak per rank, the same records and vocabularies from either world size
    np1, np2 = pre["np1"], pre["np2"]
    assert (np1["ranks"], np2["ranks"]) == (1, 2)
    assert len(np1["peak_rss_bytes"]) == 1 and len(np2["peak_rss_bytes"]) == 2
    assert all(b > 0 for b in np1["peak_rss_bytes"] + np2["peak_rss_bytes"])
    assert np1["records"] == np2["records"] and np1["sizes"] == np2["sizes"]
    assert np1["records"]["train"] > 0 and np1["records"]["val"] > 0
    assert _close(pre["np2_over_np1_wall"], np2["wall_s"] / np1["wall_s"], 5e-4 + 1e-9)
    assert _close(pre["np2_wall_vs_5min"], np2["wall_s"] / BUDGET_SECONDS, 5e-4 + 1e-9)
    assert _close(pre["np2_peak_rank_vs_8GB"], max(np2["peak_rss_bytes"]) / (BUDGET_GB * GiB), 5e-4 + 1e-9)
    reader, trainer = pre["reader_dae"], pre["trainer_dae"]
    # the DAE pipeline reads the playlists with a song or a tag: at most every training record
    assert 0 < reader["playlists"] <= np1["records"]["train"]
    # a rate rounded to R, recomputed from seconds rounded to +-e: off by up to R/2 + rate x e / (seconds - e).
    # Both errors add; pytest.approx's rel and abs do not (it takes the larger): the full suite once failed on
    # 405.7 against 128 / 0.315 = 406.35, 0.65 apart, with rel alone allowing 0.644.
    assert _within_rounding(reader["playlists_per_s"], reader["playlists"], reader["seconds"], 0.005, 0.5)
    assert _within_rounding(trainer["playlists_per_s"], reader["batch_size"], trainer["seconds_per_step"], 5e-4, 0.05)
    assert trainer["vocab_sizes"] == {k: np2["sizes"][k] for k in ("songs", "tags", "artists")}
    assert pre["reader_over_trainer"] == pytest.approx(reader["playlists_per_s"] / trainer["playlists_per_s"],
                                                       abs=5e-3 + 1e-9)

    # inference: the same data set's vocabulary, and the budget ratios of its own two figures
    assert inf["scale"] == pre["scale"] == scale
    assert inf["vocabulary"] == trainer["vocab_sizes"]
    assert inf["questions"] > 0 and inf["seconds"] > 0 and inf["peak_rss_gb"] > 0
    assert _close(inf["seconds_over_budget"], inf["seconds"] / BUDGET_SECONDS, 5e-3 + 1e-9)
    assert _close(inf["memory_over_budget"], inf["peak_rss_gb"] / BUDGET_GB, 5e-3 + 1e-9)

    # the headline is the steps' figures, none of its own
    assert h == {
        "train_playlists_per_s": rates,
        "train_scaling_efficiency_np2": train["scaling_efficiency_np2"],
        "train_achieved_over_matmul_peak": train["achieved_over_peak"],
        "preprocess_wall_s": {"np1": np1["wall_s"], "np2": np2["wall_s"]},
        "preprocess_np2_over_np1_wall": pre["np2_over_np1_wall"],
        "preprocess_np2_wall_vs_5min": pre["np2_wall_vs_5min"],
        "preprocess_np2_peak_rank_vs_8GB": pre["np2_peak_rank_vs_8GB"],
        "input_pipeline_over_trainer": pre["reader_over_trainer"],
        "inference_seconds": inf["seconds"], "inference_peak_rss_gb": inf["peak_rss_gb"],
        "inference_seconds_vs_5min": inf["seconds_over_budget"], "inference_memory_vs_8GB": inf["memory_over_budget"],
    }


def _edited(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    return data


def test_committed_speed_figures_keep_their_relations_and_an_edited_one_does_not(tmp_path):
    results = REPO / "bench/results"
    summary = json.loads((results / "speed.json").read_text())
    check_speed_summary(summary, results)
    assert summary["scale"] == "melon" and summary["steps"]["inference_speed"]["result"]["questions"] == 10_740

    def step(name):
        return lambda s: s["steps"][name]["result"]

    edits = {
        "np2 rate": lambda s: step("train_speed")(s)["playlists_per_s"].update(np2=150.0),
        "achieved GFLOP/s": lambda s: step("train_speed")(s).update(achieved_gflops_np1=30.0),
        "matmul peak": lambda s: step("train_speed")(s).update(matmul_peak_gflops=120.0),
        "np2 wall": lambda s: step("preprocess_speed")(s)["np2"].update(wall_s=70.0),
        "a rank's peak lost": lambda s: step("preprocess_speed")(s)["np2"]["peak_rss_bytes"].pop(),
        "np2 records": lambda s: step("preprocess_speed")(s)["np2"]["records"].update(train=92_000),
        "reader rate": lambda s: step("preprocess_speed")(s)["reader_dae"].update(playlists_per_s=4000),
        "trainer step": lambda s: step("preprocess_speed")(s)["trainer_dae"].update(seconds_per_step=3.0),
        "inference seconds": lambda s: step("inference_speed")(s).update(seconds=200.0),
        "inference vocabulary": lambda s: step("inference_speed")(s)["vocabulary"].update(songs=1),
        "headline": lambda s: s["headline"].update(inference_seconds=120.0),
    }
    for i, (what, edit) in enumerate(edits.items()):
        edited = _edited(results / "speed.json", edit)
        files = tmp_path / f"edit{i}"
        files.mkdir()
        for step_ in edited["steps"].values():  # the step files as edited too: only the relations can fail
            (files / step_["file"]).write_text(json.dumps(step_["result"]))
        with pytest.raises(AssertionError):
            check_speed_summary(edited, files)
    with pytest.raises(AssertionError):  # a step file that is not what the summary holds
        check_speed_summary(_edited(results / "speed.json", edits["np2 rate"]), results)


@pytest.mark.slow
def test_speed_runs_every_step_and_reports_their_ratios(workdirs, tmp_path):
    committed = {p.name: p.stat().st_mtime for p in (REPO / "bench/results").glob("*.json")}
    results = tmp_path / "results"
    env = {**os.environ, "MELON_BENCH_RESULTS": str(results)}
    proc = subprocess.run([sys.executable, "-m", "bench.speed", "--work", str(workdirs[1]), "--scale", "tiny",
                           "--keep", str(tmp_path / "tiny"), "--epochs", "1", "--set", "model.hidden=48",
                           "--set", "model.ffn=96", "--set", "validation.batch_size=128"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in results.iterdir()) == ["inference_tiny.json", "preprocess_tiny.json", "speed.json",
                                                          "train_speed.json"]
    summary = json.loads((results / "speed.json").read_text())
    check_speed_summary(summary, results)
    assert summary["scale"] == "tiny" and summary["train_work"] == str(workdirs[1])
    assert summary["steps"]["train_speed"]["result"]["overrides"] == ["model.hidden=48", "model.ffn=96",
                                                                      "validation.batch_size=128"]
    # the preprocessing read the kept split, and the inference answered the kept data set's test questions
    kept = tmp_path / "tiny"
    records = summary["steps"]["preprocess_speed"]["result"]["np1"]["records"]
    assert records == {"train": len(json.loads((kept / "split/orig/train.json").read_text())),
                       "val": len(json.loads((kept / "split/questions/val.json").read_text()))}
    inference = summary["steps"]["inference_speed"]["result"]
    assert inference["questions"] == len(json.loads((kept / "data/test.json").read_text()))
    sizes = json.loads((kept / "work/manifest.json").read_text())["sizes"]  # data, split and work directory kept
    assert inference["vocabulary"] == {k: sizes[k] for k in ("songs", "tags", "artists")}
    assert "measured in this one run" in proc.stdout
    assert {p.name: p.stat().st_mtime for p in (REPO / "bench/results").glob("*.json")} == committed
