"""Ensemble inference wall time and peak memory at full vocabulary size (melon scale by default).

    python -m bench.inference_speed [--scale melon] [--seed 0] [--keep DIR]

Generates (or reuses, in --keep DIR) the synthetic data set, its official split and the work directory
(``mpirun -np 2 python -m data.preprocess``). Training both models at melon scale takes hours on this
machine, so the benchmark exports *untrained* default-config models of the work directory's exact sizes
(the DAE with its full song/tag/artist vocabularies, the title BERT with its full output table), written
by the trainers' own export code; inference cost does not depend on the weights' values. Then it times
``python -m inference --dae --title`` on the data set's ``test.json`` (10,740 questions at melon scale),
in its own process, and reads its peak resident memory (``wait4``). Ratios against the 5-minute /
8 GB budget. Writes ``bench/results/inference_<scale>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, run, save_result
from data.workdir import export_identity
from models.config import as_dict
from models.export import write_export

BUDGET_SECONDS, BUDGET_BYTES = 300.0, 8 * 1024**3


def untrained_exports(work: Path, out: Path) -> tuple[Path, Path]:
    """Default-config DAE and title BERT of WORKDIR's sizes, exported as the trainers export them."""
    import tensorflow as tf

    from data.title import TitleTokenizer
    from hvd_train.config import load_config
    from hvd_train.dae import check_config as dae_config_of, export_config
    from hvd_train.title import check_config as title_config_of
    from models.dae import DAE
    from models.title import TitleBERT
    from models.weights import weights_by_path

    manifest = json.loads((work / "manifest.json").read_text())
    sizes = manifest["sizes"]
    tf.random.set_seed(0)
    dae_config = dae_config_of(load_config(REPO / "configs/dae.yaml"))
    dae = DAE.from_config(dae_config.model, sizes)
    write_export(out / "dae/export", weights_by_path(dae),
                 export_config(dae_config, manifest, 0, {"music_ndcg": 0.0, "tag_ndcg": 0.0, "score": 0.0}))
    title_config = title_config_of(load_config(REPO / "configs/title.yaml"))
    tok = TitleTokenizer(work / "title.model")
    title = TitleBERT.from_config(title_config.model, sizes, tok)
    write_export(out / "title/export", weights_by_path(title), {
        "model": "title_finetune", "model_config": as_dict(title_config.model), "sizes": sizes,
        **export_identity(manifest), "epoch": 0,
        "trained_with": title_config.as_dict()})
    return out / "dae", out / "title"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="melon", choices=("tiny", "small", "melon"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="reuse/keep the data, split and work directory here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        data, split, work = root / "data", root / "split", root / "work"
        if not (data / "synth_info.json").exists():
            run([sys.executable, "-m", "data.synth", "--scale", args.scale, "--seed", str(args.seed), "--out", str(data), "--force"])
        if not (split / "answers/val.json").exists():
            run([sys.executable, "-m", "data.split", str(data / "train.json"), "--out", str(split), "--force"])
        if not (work / "manifest.json").exists():
            run(["mpirun", "-np", "2", "--oversubscribe", sys.executable, "-m", "data.preprocess", "--split", str(split),
                 "--meta", str(data), "--out", str(work), "--force"])
        dae, title = untrained_exports(work, Path(tmp) / "models")
        questions = data / "test.json"
        n = len(json.loads(questions.read_text()))
        usage = run([sys.executable, "-m", "inference", "--questions", str(questions), "--work", str(work),
                     "--dae", str(dae), "--title", str(title), "--out", str(Path(tmp) / "results.json"), "--no-progress"])
        measured = {"seconds": round(usage["wall_s"], 1), "peak_rss_gb": round(usage["peak_rss_gb"], 2)}
        sizes = json.loads((work / "manifest.json").read_text())["sizes"]
    result = {"scale": args.scale, "questions": n, "vocabulary": {k: sizes[k] for k in ("songs", "tags", "artists")},
              **measured, "seconds_over_budget": round(measured["seconds"] / BUDGET_SECONDS, 2),
              "memory_over_budget": round(measured["peak_rss_gb"] * 1024**3 / BUDGET_BYTES, 2)}
    print(json.dumps(result, indent=1))
    save_result(f"inference_{args.scale}", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
