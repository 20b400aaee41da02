"""The spread behind the suite's quality floor (tests/test_quickstart.py): the tiny main job, exactly as the
suite runs it (tests/conftest.py's ``quickstart_tiny``: one epoch per training stage), over several generator
seeds, and every model's report-half score against popularity's and the strongest peer's.

    python -m bench.quality_floor [--seeds 0 1 2] [--keep runs/quality-floor]

Writes ``bench/results/quality_floor.json``: per seed, each scored model's score and its ratio to popularity
and to the peer (playlist_cf); over the seeds, the smallest of each ratio. The test's margins sit below those
smallest ratios (tests/test_quickstart.py says by how much): a recommender that ranks no better than
popularity turns the suite red, the seed-to-seed noise does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import REPO, run, save_result

# tests/conftest.py's quickstart_tiny (its QUICKSTART_EPOCHS and extra flags)
TINY_FLAGS = ["--dae-epochs", "1", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--word2vec-epochs", "2",
              "--cnn-epochs", "1"]
MODELS = ("ensemble", "dae", "title", "word2vec", "playlist_cf", "popular")


def scores(run_dir: Path) -> dict[str, float]:
    """Each scored model's report-half score in a finished main job's ``scores/``."""
    return {m: json.loads((run_dir / f"scores/{m}.json").read_text(encoding="utf-8"))["score"] for m in MODELS}


def ratios(by_model: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each model's score over popularity's and over playlist_cf's."""
    return {m: {"popular": s / by_model["popular"], "playlist_cf": s / by_model["playlist_cf"]}
            for m, s in by_model.items()}


def smallest(per_seed: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Over the seeds, each model's smallest ratio to each reference."""
    first = next(iter(per_seed.values()))["ratios"]
    return {m: {ref: min(r["ratios"][m][ref] for r in per_seed.values()) for ref in first[m]} for m in first}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep", type=Path, default=REPO / "runs/quality-floor", help="the runs' folder")
    args = parser.parse_args(argv)
    per_seed = {}
    for seed in args.seeds:
        out = args.keep / f"seed-{seed}"
        if not (out / "scores/table.md").is_file():
            run(["bash", "launch/quickstart.sh", "--scale", "tiny", "--seed", str(seed), "--out", out, *TINY_FLAGS],
                args.keep / f"seed-{seed}.log", name=f"tiny main job, seed {seed}")
        by_model = scores(out)
        per_seed[str(seed)] = {"scores": by_model, "ratios": ratios(by_model)}
        print(f"seed {seed}: " + ", ".join(f"{m} {s:.4f}" for m, s in by_model.items()), flush=True)
    result = {"command": "python -m bench.quality_floor --seeds " + " ".join(map(str, args.seeds)),
              "flags": TINY_FLAGS, "per_seed": per_seed, "smallest_ratio": smallest(per_seed)}
    save_result("quality_floor", result)
    for m, r in result["smallest_ratio"].items():
        print(f"{m}: smallest ratio to popular {r['popular']:.3f}, to playlist_cf {r['playlist_cf']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
