"""Generation time and peak memory of the synthetic data set, per scale, against the budget.

    python -m bench.synth_speed [--scales tiny small melon] [--seed 0]

Runs ``python -m data.synth`` once per scale in a fresh process (into a temporary folder) and reports
wall time, peak resident memory of that process (from ``wait4``), playlists generated per second, and
the ratio of time and memory to the melon-scale budget (180 s, 6 GB) measured in the same run. Writes
``bench/results/synth_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.common import run, save_result
from data.synth import scale_sizes

BUDGET_SECONDS, BUDGET_BYTES = 180.0, 6 * 1024**3


def measure(scale: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        usage = run([sys.executable, "-m", "data.synth", "--scale", scale, "--seed", str(seed), "--out", tmp])
        wall = usage["wall_s"]
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*.json"))
    sizes = scale_sizes(scale)
    playlists = sizes["train"] + sizes["val"] + sizes["test"]
    return {"scale": scale, "playlists": playlists, "songs": sizes["songs"], "wall_s": round(wall, 1),
            "peak_rss_gb": round(usage["peak_rss_gb"], 2), "playlists_per_s": round(playlists / wall),
            "output_mb": round(size / 1024**2), "time_vs_budget": round(wall / BUDGET_SECONDS, 3),
            "memory_vs_budget": round(usage["peak_rss_gb"] * 1024**3 / BUDGET_BYTES, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synth_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", nargs="+", default=["tiny", "small", "melon"], choices=["tiny", "small", "melon"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [measure(scale, args.seed) for scale in args.scales]
    print(f"{'scale':<6} {'playlists':>9} {'songs':>8} {'wall s':>7} {'peak GB':>8} {'pl/s':>7} {'MB out':>7} "
          f"{'time/180s':>9} {'mem/6GB':>8}")
    for r in rows:
        print(f"{r['scale']:<6} {r['playlists']:>9} {r['songs']:>8} {r['wall_s']:>7} {r['peak_rss_gb']:>8} "
              f"{r['playlists_per_s']:>7} {r['output_mb']:>7} {r['time_vs_budget']:>9} {r['memory_vs_budget']:>8}")
    save_result("synth_speed", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
