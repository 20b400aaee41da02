"""What the benchmarks share: the repository root and where their results go."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def results_dir() -> Path:
    """``bench/results``, or ``$MELON_BENCH_RESULTS`` (tests point it elsewhere to keep the committed figures)."""
    return Path(os.environ.get("MELON_BENCH_RESULTS") or REPO / "bench" / "results")


def save_result(name: str, result) -> Path:
    """Write ``RESULTS/NAME.json`` (see ``results_dir``) and say where it went."""
    out = results_dir() / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")
    return out
