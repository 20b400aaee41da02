"""The DAE's validation curve under each generalisation lever: which setting to keep, and why.

    python -m bench.dae_curves [--run runs/quickstart-small] [--out runs/dae-curves] [--epochs 6] [--np 2]
                               [--variants NAME ...]

Each variant is the main job's DAE command (``horovodrun -np N hvd_train/dae.py`` on RUN/work) with a few
``--set`` overrides (:data:`VARIANTS`), trained for E epochs with validation after every epoch. Validation
scores the protocol's *tuning* questions only (data/task.py), so picking the best variant and
epoch here spends nothing of the report part. Per epoch it records the training loss, the learning rate
and the validation scores from the run's TensorBoard events. Finished variants in OUT are reused (the
trainer resumes from its checkpoint, and a finished one only prints its closing lines), so a rerun with
new variants costs only those; each invocation's output is kept in OUT/NAME.N.log. Writes ``bench/results/dae_curves.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bench.common import REPO, results_dir, run, save_result
from bench.melon_budget import SETTINGS as MELON_SETTINGS

# The main job's DAE schedule before this benchmark: warmup 300 steps (longer than a 2-epoch run on small),
# and the reference's targets (the whole playlist). Every variant names its targets: the default changed.
BASE = ["train.warmup_steps=300", "loss.targets=all"]
# the main job's DAE since the title segment: the short schedule, hidden targets, weight decay, titles read
TITLED = ["train.warmup_steps=60", "train.lr_multiplier=0.15", "loss.targets=hidden", "train.weight_decay=1.0",
          "model.title=true"]
VARIANTS = {
    "reference": BASE,
    "warmup 60": ["train.warmup_steps=60", "train.lr_scaling=none", "loss.targets=all"],
    "hidden targets": ["train.warmup_steps=300", "loss.targets=hidden"],
    "hidden, warmup 60": ["train.warmup_steps=60", "train.lr_scaling=none", "loss.targets=hidden"],
    "hidden, weight decay 1": ["train.warmup_steps=300", "loss.targets=hidden", "train.weight_decay=1.0"],
    "hidden, untied output": ["train.warmup_steps=300", "loss.targets=hidden", "model.tied_output=false"],
    # ALS with 32 factors beats the 240-wide DAE on small: a narrower table memorises less
    "width 64": BASE + ["model.hidden=64", "model.ffn=256"],
    # a schedule that fits a short run: warmup over the first epoch (62 steps at np 2) to a peak of 2.5e-3
    # (0.15 x 2 ranks x 240^-0.5 x 60^-0.5), then the schedule's step^-0.5 decay
    "short warmup, peak 2.5e-3": ["train.warmup_steps=60", "train.lr_multiplier=0.15", "loss.targets=all"],
    "hidden, short warmup, peak 2.5e-3": ["train.warmup_steps=60", "train.lr_multiplier=0.15", "loss.targets=hidden"],
    "hidden, short warmup, weight decay 1": ["train.warmup_steps=60", "train.lr_multiplier=0.15", "loss.targets=hidden",
                                             "train.weight_decay=1.0"],
    "hidden, short warmup, untied output": ["train.warmup_steps=60", "train.lr_multiplier=0.15", "loss.targets=hidden",
                                            "model.tied_output=false"],
    # the title's pieces as a fourth input segment (model.title; train.title_keep 0.5, train.title_only 0.1)
    "hidden, short warmup, weight decay 1, title": TITLED,
    # the tag head's share of the loss: the reference's 0.15 (the score's tag weight) or more
    "hidden, short warmup, weight decay 1, title, tag weight 0.5": TITLED + ["loss.tag_weight=0.5"],
    "hidden, short warmup, weight decay 1, title, untied output": TITLED + ["model.tied_output=false"],
    # four heads of 60 in place of two of 120: the same FLOPs, more ways for the CLS tokens to pool the set
    "hidden, short warmup, weight decay 1, title, 4 heads": TITLED + ["model.heads=4"],
    # a title alone is the whole input in 5% of the samples by default (title_keep 0.5 x title_only 0.1); more
    "hidden, short warmup, weight decay 1, title, title only 0.3": TITLED + ["train.title_only=0.3"],
    # communication-light settings (README "Communication and scaling"): fp16 allreduce (half the bytes) and 2
    # accumulated batches per allreduce (half the bytes per playlist), the warmup kept at one epoch of steps
    "main job, fp16 allreduce, 2 accumulated batches": TITLED + [
        "hardware.gradient_compression=fp16", "train.accumulation_steps=2", "train.warmup_steps=30"],
    # the sampled softmax (K shared negatives from counts^0.75, log-Q corrected) with row gradients, lazy Adam
    "main job, sampled output": TITLED + ["loss.output=sampled", "hardware.sparse_as_dense=false"],
    # the output biases start at log(count / playlists) (the tied table's rows stay random)
    "main job, popularity biases": TITLED + ["train.output_init=popularity"],
    # ... and an untied output table starting at zero: the untrained model ranks exactly by popularity
    "main job, untied output from popularity": TITLED + ["train.output_init=popularity", "model.tied_output=false"],
    "hidden, width 64": ["train.warmup_steps=300", "loss.targets=hidden", "model.hidden=64", "model.ffn=256"],
    # bench.melon_budget's DAE (sampled output as rows, untied heads from popularity, 2,000 tuning questions) on
    # small: a 10-minute stand-in for a 40-minute melon probe (the two plateau at the same share of item_cf)
    "melon settings": MELON_SETTINGS,
    # ... with a song's output row plus 5 / (5 + its training count) of its artist's shared row
    "melon settings, artist prior 5": MELON_SETTINGS + ["model.artist_prior=5"],
}

def curve(run: Path) -> list[dict]:
    """Per finished epoch, from the run's TensorBoard events (rank 0 writes them at every epoch end, across
    resumes): the training loss, the learning rate, playlists/s and the validation scores."""
    import tensorflow as tf

    by_epoch: dict[int, dict] = {}
    names = {"loss/loss": "loss", "learning_rate": "lr", "playlists_per_second": "playlists_per_s",
             "validation/music_ndcg": "music_ndcg", "validation/tag_ndcg": "tag_ndcg", "validation/score": "score"}
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                if value.tag in names:
                    by_epoch.setdefault(int(event.step), {"epoch": int(event.step)})[names[value.tag]] = \
                        float(tf.make_ndarray(value.tensor))
    return [by_epoch[e] for e in sorted(by_epoch) if "score" in by_epoch[e]]


def train(work: Path, out: Path, overrides: list[str], epochs: int, np_: int) -> list[dict]:
    cmd = ["horovodrun", "-np", str(np_), sys.executable, "hvd_train/dae.py", "--work", str(work), "--out", str(out),
           "--set", f"train.epochs={epochs}", "--set", "validation.every_epochs=1"]
    for item in overrides:
        cmd += ["--set", item]
    logs = sorted(out.parent.glob(f"{out.name}.*.log"))
    run(cmd, out.parent / f"{out.name}.{len(logs) + 1}.log", name="bench.dae_curves")  # a resumed run adds one
    return curve(out)


def markdown(curves: dict) -> str:
    epochs = max(len(c["epochs"]) for c in curves.values())
    head = "| variant | overrides | " + " | ".join(f"epoch {e}" for e in range(1, epochs + 1)) + " | best |"
    lines = [head, "| --- | --- |" + " ---: |" * (epochs + 1)]
    for name, c in curves.items():
        scores = [r["score"] for r in c["epochs"]]
        best = max(scores) if scores else float("nan")
        cells = [f"**{s:.4f}**" if s == best else f"{s:.4f}" for s in scores] + [""] * (epochs - len(scores))
        lines.append(f"| {name} | `{' '.join(c['overrides'])}` | " + " | ".join(cells) + f" | {best:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dae_curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs/quickstart-small", help="a quickstart run folder")
    parser.add_argument("--out", type=Path, default=REPO / "runs/dae-curves")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--np", type=int, default=2, dest="np_")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    path = results_dir() / "dae_curves.json"
    import json

    curves = json.loads(path.read_text(encoding="utf-8"))["curves"] if path.is_file() else {}
    for name in args.variants:
        folder = args.out / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        rows = train(args.run / "work", folder, VARIANTS[name], args.epochs, args.np_)
        curves[name] = {"overrides": VARIANTS[name], "run": str(folder), "epochs": rows}
        print(f"{name}: " + ", ".join(f"{r['score']:.4f}" for r in rows), flush=True)
        save_result("dae_curves", {"work": str(args.run / "work"), "np": args.np_, "questions": "the protocol's "
                                   "tuning part of the validation questions", "curves": curves})
    curves = {name: curves[name] for name in VARIANTS if name in curves}
    (results_dir() / "dae_curves.md").write_text(markdown(curves), encoding="utf-8")
    print(markdown(curves))
    return 0


if __name__ == "__main__":
    sys.exit(main())
