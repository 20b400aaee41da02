"""Word2Vec: neighbour quality against item-cosine CF, throughput at -np 1 and 2, and bytes sent per step.

    python -m bench.word2vec [--run runs/quickstart-small] [--steps 30]

RUN is a finished main-job run (``bash launch/quickstart.sh``: its work directory, ``word2vec/`` and
``neighbours/`` runs and results). Three measurements, in one run, written to bench/results/word2vec.json:

1. **Neighbour quality** on the report half of the validation questions that give songs (data/task.py;
   nothing was tuned on them): recall@100 of the hidden answer songs from the given ones, for the Word2Vec
   member alone (``python -m inference --word2vec``: the mean input vector of the given items against every
   output vector), the ensemble's item-cosine CF member alone (``--neighbours RUN/neighbours``) and
   popularity, on the same questions with the same filters.
2. **Throughput**: ``horovodrun -np 1`` and ``-np 2`` of hvd_train/word2vec.py on RUN's work directory,
   2 epochs of at most ``--steps`` steps each, embedding gradients as allgathered rows
   (``hardware.sparse_as_dense: false``, the default) and densified (``true``); the playlists/s of the
   second epoch (the first traces the step).
3. **Bytes per step**, from the real gradient tensors of one real step (rank 0 of 2, its first batch):
   densified, each table's whole gradient (rows x d x 4 bytes), which a ring allreduce sends 2(N-1)/N
   times per rank; as rows, the gradient's values and indices (one row per lookup: Horovod does not merge
   duplicate rows), which a ring allgather sends N-1 times per rank. Both at N = 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, run, save_result
from data.melon import load_playlists
from data.task import parts, select


def recall_at_100(results: Path, questions: list[dict], answers: dict) -> float:
    """Mean over ``questions`` of |top-100 ∩ answer songs| / |answer songs|."""
    by_id = {r["id"]: r["songs"][:100] for r in json.loads(results.read_text(encoding="utf-8"))}
    values = [len(set(by_id[q["id"]]) & set(answers[q["id"]])) / len(answers[q["id"]]) for q in questions]
    return sum(values) / len(values)


def neighbour_quality(rundir: Path, tmp: Path) -> dict:
    questions = load_playlists(rundir / "split/questions/val.json")
    answers = {a["id"]: a["songs"] for a in load_playlists(rundir / "split/answers/val.json")}
    report = [q for q in select(questions, parts(questions)["report"]) if q["songs"] and answers[q["id"]]]
    systems = {"word2vec": ["--word2vec", rundir / "word2vec"], "item_cf": ["--neighbours", rundir / "neighbours"]}
    out = {"questions": len(report)}
    for name, flags in systems.items():
        results = tmp / f"{name}.json"
        run([sys.executable, "-m", "inference", "--questions", rundir / "split/questions/val.json", "--work",
             rundir / "work", *flags, "--out", results, "--no-progress"], name=f"recall {name}")
        out[name] = round(recall_at_100(results, report, answers), 4)
    out["popular"] = round(recall_at_100(rundir / "results/popular.json", report, answers), 4)
    return out


def throughput(work: Path, tmp: Path, steps: int) -> dict:
    """playlists/s of the second epoch, by ranks and by how the embedding gradients travel."""
    rates = {}
    for sparse_as_dense in (False, True):
        for np_ in (1, 2):
            out = tmp / f"np{np_}-{sparse_as_dense}"
            sets = [f"train.epochs=2", f"train.steps_per_epoch={steps}", "validation.every_epochs=2",
                    f"hardware.sparse_as_dense={str(sparse_as_dense).lower()}"]
            log = run(["horovodrun", "-np", str(np_), sys.executable, REPO / "hvd_train/word2vec.py", "--work", work,
                       "--out", out, *[a for s in sets for a in ("--set", s)]],
                      name=f"np {np_}, sparse_as_dense {sparse_as_dense}")["output"]
            rate = re.findall(r"\[word2vec\] epoch 2: loss [0-9.]+, lr [0-9.e+-]+, ([0-9]+) playlists/s", log)
            rates[f"np{np_}_{'dense' if sparse_as_dense else 'rows'}"] = float(rate[-1])
    for kind in ("dense", "rows"):
        rates[f"np2_over_np1_{kind}"] = round(rates[f"np2_{kind}"] / rates[f"np1_{kind}"], 3)
    return rates


def bytes_per_step(work: Path) -> dict:
    """The gradients of one real step on rank 0 of 2, by table: dense and as rows (see the docstring)."""
    import tensorflow as tf

    from data.pipeline import training_dataset
    from hvd_train.config import load_config
    from hvd_train.word2vec import check_config
    from models.word2vec import Word2Vec

    config = check_config(load_config(REPO / "configs/word2vec.yaml"))
    manifest = json.loads((work / "manifest.json").read_text(encoding="utf-8"))
    model = Word2Vec.from_config(config.model, manifest["sizes"])
    batch = next(iter(training_dataset(work, "word2vec", 0, 2, 1, config.train.batch_size, word2vec=config.model)))
    with tf.GradientTape() as tape:
        loss, _ = model.loss(batch)
    tables = {}
    for variable, gradient in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
        values, indices = gradient.values, gradient.indices
        unique_rows = int(tf.size(tf.unique(indices)[0]))
        tables[variable.name.split(":")[0]] = {
            "rows": int(variable.shape[0]), "dim": int(variable.shape[1]), "dense_bytes": int(variable.shape.num_elements()) * 4,
            "lookups": int(indices.shape[0]), "unique_rows": unique_rows,
            "rows_bytes": int(values.shape.num_elements()) * 4 + int(indices.shape[0]) * indices.dtype.size}
    dense = sum(t["dense_bytes"] for t in tables.values())
    rows = sum(t["rows_bytes"] for t in tables.values())
    n = 2
    return {"tables": tables, "playlists_per_rank_step": config.train.batch_size,
            "examples_per_rank_step": config.train.batch_size * config.model.pairs,
            "dense_allreduce_sent_per_rank": round(2 * (n - 1) / n * dense),
            "rows_allgather_sent_per_rank": (n - 1) * rows,
            "rows_over_dense": round((n - 1) * rows / (2 * (n - 1) / n * dense), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.word2vec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs/quickstart-small")
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch of the throughput runs")
    args = parser.parse_args(argv)
    if not (args.run / "word2vec/export/weights.npz").is_file():
        parser.error(f"{args.run}: no finished word2vec run (run bash launch/quickstart.sh first)")
    with tempfile.TemporaryDirectory() as tmp:
        result = {"run": str(args.run), "recall_at_100": neighbour_quality(args.run, Path(tmp)),
                  "bytes_per_step": bytes_per_step(args.run / "work"),
                  "playlists_per_s": throughput(args.run / "work", Path(tmp), args.steps)}
    print(json.dumps({k: v for k, v in result.items() if k != "bytes_per_step"}, indent=1))
    save_result("word2vec", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
