"""bench.speed end to end at tiny scale: every step runs for real (horovodrun -np 1 and 2, mpirun
preprocessing, python -m inference) and the summary's ratios are the steps' own figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_speed_runs_every_step_and_reports_their_ratios(workdirs, tmp_path):
    committed = {p.name: p.stat().st_mtime for p in (REPO / "bench/results").glob("*.json")}
    results = tmp_path / "results"
    env = {**os.environ, "MELON_BENCH_RESULTS": str(results)}
    proc = subprocess.run([sys.executable, "-m", "bench.speed", "--work", str(workdirs[1]), "--scale", "tiny",
                           "--keep", str(tmp_path / "tiny"), "--epochs", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in results.iterdir()) == ["inference_tiny.json", "preprocess_tiny.json", "speed.json",
                                                          "train_speed.json"]
    summary = json.loads((results / "speed.json").read_text())
    h, steps = summary["headline"], summary["steps"]
    rates = h["train_playlists_per_s"]
    assert rates["np1"] > 0 and rates["np2"] > 0
    assert h["train_scaling_efficiency_np2"] == pytest.approx(rates["np2"] / (2 * rates["np1"]), abs=1e-3)
    assert 0 < h["train_achieved_over_matmul_peak"]
    assert steps["preprocess_speed"]["result"]["np2"]["records"]["train"] > 0
    assert h["inference_seconds"] > 0 and h["inference_peak_rss_gb"] > 0
    assert (tmp_path / "tiny/work/manifest.json").is_file()  # the data, split and work directory are kept
    assert "measured in this one run" in proc.stdout
    assert {p.name: p.stat().st_mtime for p in (REPO / "bench/results").glob("*.json")} == committed
