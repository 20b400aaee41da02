"""What the benchmarks share: the repository root and where their results go."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def save_result(name: str, result) -> Path:
    """Write ``bench/results/NAME.json`` and say where it went."""
    out = REPO / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out.relative_to(REPO)}")
    return out
