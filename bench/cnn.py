"""The mel CNN: its tags on songs it never trained on, against genre popularity; size; throughput.

    python -m bench.cnn --work WORKDIR --run CNNRUN [--split SPLITDIR] [--steps 40] [--name cnn_small]
        [--results NAME=RESULTS_JSON ...]

WORKDIR holds mel shards (``data.preprocess --mel``) and CNNRUN is a finished ``hvd_train/cnn.py`` run on it
(the main job's ``runs/quickstart-small/{work,cnn}``). Written to bench/results/NAME.json, in one run:

1. **Tags of held-out songs**: on the ``mel_holdout`` songs (a fixed hash of the song id; no step
   trained on them, data/mel_records.py), the mean nDCG@10 (official formula) of the top 10 tags
   against each song's label tags (its most frequent tags among the training playlists holding it) for
   the CNN (its export, whole stored frames), *genre popularity* (the tags most frequent among the
   ``mel_train`` songs sharing the song's genres: what a system that knows the genre but not the audio
   predicts) and *popularity* (the most frequent label tags overall). The CNN's best epoch was chosen
   on these same songs (its validation), so this figure is a tuning figure, as the validation line says.
2. **Size**: the parameters of the trained config and of the design's widths (``model.width`` 1.0) over
   this tag vocabulary and over the real one (29,160 tags), against the design's 277 million.
3. **Cold start**: on the report questions (data/task.py; nothing was tuned on them) that give
   songs with audio, recall@100 of the answer songs outside the DAE's vocabulary (which no vocabulary
   member can propose) by the audio member's rule alone: the songs outside the vocabulary nearest by
   audio cosine to the mean embedding of the given songs, never a given song or one released after the
   question's update date; against the same candidates ranked by training-playlist count (popularity
   outside the vocabulary). With ``--results`` (e.g. bench.quality's ``ensemble`` and
   ``ensemble_without_audio`` results on the validation questions), the same recall of each results
   file's 100 songs on the same questions: what the ensemble with and without the audio member returns.
4. **Throughput and memory**: ``horovodrun -np 1`` and ``-np 2`` of hvd_train/cnn.py with CNNRUN's
   config, 2 epochs of ``--steps`` steps, songs/s of the second epoch (the first traces the step), and
   the peak resident memory of the largest process.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import REPO, run, save_result
from data.melon import load_playlists, load_results
from data.task import ndcg, parts, select
from data.vocab import updt_day
from inference.audio import build_index

DESIGN_PARAMETERS = 277_000_000
REAL_TAGS = 29_160


def labels(work: Path, kind: str) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """(song ids, label tags, genres) of a mel shard kind, in shard order."""
    from data.pipeline import mel_dataset

    ids, tags, genres = [], [], []
    for batch in mel_dataset(work, kind, 512):
        ids += batch["id"].numpy().tolist()
        tags += [[t for t in row if t >= 0] for row in batch["tags"].numpy().tolist()]
        genres += [[g for g in row if g >= 0] for row in batch["genres"].numpy().tolist()]
    return ids, tags, genres


def mean_ndcg(truth: list[list[int]], predicted: list[list[int]]) -> float:
    return float(np.mean([ndcg(t, p[:10]) for t, p in zip(truth, predicted)]))


def popularity_predictions(train_tags, train_genres, genres) -> tuple[list[list[int]], list[list[int]]]:
    """(genre popularity, popularity): each held-out song's top 10 tags by the label-tag counts of the
    training songs sharing a genre with it (summed over its genres, then overall counts to break ties and
    fill), and the top 10 overall."""
    overall = Counter(t for tags in train_tags for t in tags)
    by_genre: dict[int, Counter] = {}
    for tags, gs in zip(train_tags, train_genres):
        for g in gs:
            by_genre.setdefault(g, Counter()).update(tags)
    top = [t for t, _ in sorted(overall.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    out = []
    for gs in genres:
        votes = Counter()
        for g in gs:
            votes.update(by_genre.get(g, {}))
        ranked = [t for t, _ in sorted(votes.items(), key=lambda kv: (-kv[1], -overall[kv[0]], kv[0]))[:10]]
        out.append(ranked + [t for t in top if t not in ranked][: 10 - len(ranked)])
    return out, [top] * len(genres)


def tag_quality(work: Path, index: dict) -> dict:
    """Item 1 of the module docstring; ``index``: inference.audio's arrays over (at least) the hold-out songs."""
    _, train_tags, train_genres = labels(work, "mel_train")
    ids, truth, genres = labels(work, "mel_holdout")
    row = {s: i for i, s in enumerate(index["song_ids"].tolist())}
    cnn = [index["tags"][row[s]].tolist() for s in ids]
    by_genre, popular = popularity_predictions(train_tags, train_genres, genres)
    scores = {"cnn": mean_ndcg(truth, cnn), "genre_popularity": mean_ndcg(truth, by_genre),
              "popularity": mean_ndcg(truth, popular)}
    return {"songs": len(ids), "train_songs": len(train_tags), "ndcg_at_10": scores,
            "cnn_over_genre_popularity": scores["cnn"] / scores["genre_popularity"]}


def cold_start(work: Path, index: dict, split: Path, results: dict[str, Path] | None = None) -> dict:
    """Item 3 of the module docstring; ``index``: inference.audio's arrays over every song with audio;
    ``results``: name -> a results file over the same questions."""
    vocab = json.loads((work / "vocab.json").read_text(encoding="utf-8"))
    in_vocab = {s for s, _ in vocab["songs"]}
    release = np.load(work / "release_dates.npz", allow_pickle=False)["release_dates"]
    questions = load_playlists(work / "eval/questions.json")
    answers = {a["id"]: a["songs"] for a in load_playlists(work / "eval/answers.json")}
    train_counts = Counter(s for p in load_playlists(split / "orig/train.json") for s in p["songs"])
    ids, vectors = index["song_ids"], index["embeddings"]
    outside = np.array([s not in in_vocab for s in ids.tolist()])
    counts = np.array([train_counts.get(s, 0) for s in ids.tolist()], dtype=np.float64)
    row = {s: i for i, s in enumerate(ids.tolist())}
    recalls = {"audio": [], "popularity_outside_vocab": []}
    lists = {name: {r["id"]: r["songs"] for r in load_results(path)} for name, path in (results or {}).items()}
    recalls.update({name: [] for name in lists})
    for q in select(questions, parts(questions)["report"]):
        given = [row[s] for s in q["songs"] if s in row]
        hidden = {s for s in answers[q["id"]] if s not in in_vocab}
        if not given or not hidden:
            continue
        allowed = outside & (release[ids] <= updt_day(q["updt_date"]))
        allowed[given] = False
        query = vectors[given].mean(axis=0)
        for name, scores in (("audio", vectors @ query), ("popularity_outside_vocab", counts.copy())):
            scores = np.where(allowed, scores, -np.inf)
            top = set(ids[np.argsort(-scores, kind="stable")[:100]].tolist())
            recalls[name].append(len(top & hidden) / len(hidden))
        for name, songs in lists.items():
            recalls[name].append(len(set(songs[q["id"]]) & hidden) / len(hidden))
    return {"questions": len(recalls["audio"]), "recall_at_100": {k: float(np.mean(v)) for k, v in recalls.items()},
            "note": "answer songs outside the DAE vocabulary; without the audio member the ensemble proposes none"}


def sizes(config: dict, n_tags: int, n_genres: int) -> dict:
    from models.cnn import CNNConfig, parameter_count

    trained = CNNConfig(**config["model_config"])
    design = CNNConfig(**{**config["model_config"], "width": 1.0})
    return {"trained": parameter_count(trained, n_tags, n_genres), "design_widths": parameter_count(design, n_tags, n_genres),
            "design_widths_real_tags": parameter_count(design, REAL_TAGS, n_genres), "design_paper": DESIGN_PARAMETERS,
            "tags": n_tags, "genres": n_genres, "width": trained.width}


def throughput(work: Path, config: Path, steps: int, tmp: Path) -> dict:
    out = {}
    for np_ in (1, 2):
        cmd = ["horovodrun", "-np", str(np_), sys.executable, str(REPO / "hvd_train/cnn.py"), "--config", str(config),
               "--work", str(work), "--out", str(tmp / f"np{np_}"), "--set", "train.epochs=2",
               "--set", f"train.steps_per_epoch={steps}", "--set", "validation.every_epochs=2"]
        done = run(cmd, log=tmp / f"np{np_}.log", name=f"cnn np{np_}")
        rates = re.findall(r"\[cnn\] epoch \d+: .* ([0-9]+) songs/s", done["output"])
        out[f"np{np_}"] = {"songs_per_s": float(rates[-1]), "peak_rss_gb": done["peak_rss_gb"]}
    out["np2_over_np1"] = out["np2"]["songs_per_s"] / out["np1"]["songs_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cnn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a work directory with mel shards")
    parser.add_argument("--run", type=Path, required=True, help="a finished hvd_train/cnn.py run on it")
    parser.add_argument("--split", type=Path, help="the split WORKDIR was built from (default WORKDIR/../split)")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch of the throughput runs")
    parser.add_argument("--name", default="cnn_small", help="bench/results/NAME.json")
    parser.add_argument("--results", nargs="+", default=[], metavar="NAME=RESULTS_JSON",
                        help="results files on WORKDIR's validation questions whose cold-start recall to add")
    args = parser.parse_args(argv)
    export = json.loads((args.run / "export/config.json").read_text(encoding="utf-8"))
    manifest = json.loads((args.work / "manifest.json").read_text(encoding="utf-8"))

    index = build_index(args.work, args.run)  # every song with audio, once, for both measurements
    result = {"work": str(args.work), "run": str(args.run), "epoch": export["epoch"],
              "validation": export["validation"], "mel": {k: manifest["mel"][k] for k in ("frames", "report")},
              "tag_quality": tag_quality(args.work, index),
              "cold_start": cold_start(args.work, index, args.split or args.work.parent / "split",
                                       dict(spec.split("=", 1) for spec in args.results)),
              "parameters": sizes(export, manifest["sizes"]["tags"], len(manifest["mel"]["genres"]))}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cnn.yaml"
        import yaml

        config.write_text(yaml.safe_dump(export["trained_with"], allow_unicode=True), encoding="utf-8")
        result["throughput"] = throughput(args.work, config, args.steps, Path(tmp))
    q, p, t = result["tag_quality"], result["parameters"], result["throughput"]
    print(f"held-out songs ({q['songs']}): tag nDCG@10 CNN {q['ndcg_at_10']['cnn']:.4f}, genre popularity "
          f"{q['ndcg_at_10']['genre_popularity']:.4f}, popularity {q['ndcg_at_10']['popularity']:.4f} "
          f"({q['cnn_over_genre_popularity']:.2f}x genre popularity)")
    c = result["cold_start"]["recall_at_100"]
    print(f"cold start ({result['cold_start']['questions']} report questions): recall@100 of answer songs outside the "
          f"DAE vocabulary: " + ", ".join(f"{name} {value:.4f}" for name, value in c.items()))
    print(f"parameters: {p['trained']:,} trained (width {p['width']}); design widths {p['design_widths']:,}, "
          f"{p['design_widths_real_tags']:,} over 29,160 tags, against the design's 277 million")
    print(f"throughput: np1 {t['np1']['songs_per_s']:.0f} songs/s, np2 {t['np2']['songs_per_s']:.0f} songs/s "
          f"({t['np2_over_np1']:.2f}x); peak memory {t['np1']['peak_rss_gb']:.2f} / {t['np2']['peak_rss_gb']:.2f} GB")
    save_result(args.name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
