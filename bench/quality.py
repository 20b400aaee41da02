"""Recommendation quality of the trained models next to classic peers, with their time and memory.

    python -m bench.quality --scale small|tiny|melon [--out-root runs] [--results-dir bench/results]
                            [--skip-ensemble] [--no-tune | --tune-peers PEER ...] [--tune-questions N]
                            [--systems SYSTEM ...] [--seed 0] [--epochs D P F] [--steps-per-epoch N]

1. Data, split and models: ``bash launch/quickstart.sh --scale SCALE --out OUT_ROOT/quickstart-SCALE``
   (synthetic data, the official split, preprocessing, DAE, title BERT and Word2Vec training, the neighbour members,
   ensemble inference, evaluation). A finished run folder (``scores/table.md``, the neighbour export and
   the four results files present) is reused
   as it is, without rerunning quickstart, so that its ``timings.json`` keeps the training times of the
   run that trained the models. With ``--skip-ensemble`` only the data and the split are made (the same
   ``data.synth``/``data.split`` commands quickstart runs, into the same folders) and no model is trained.
2. Peers (bench/peers.py): popular, genre_popular, item_cf, als, ease and playlist_cf on the split's
   training playlists and validation questions, each in its own process (``python -m bench.peers``), so
   that its wall time and peak resident memory (``wait4``) are its own. The knobs of item_cf, als, ease and
   playlist_cf are first searched on the protocol's tuning half of the validation questions
   (data/task.py; also in their own process, timed), then the best setting runs on every question.
3. Neural systems (:func:`neural_systems`, every member declared in inference/members.py): the ensemble
   (DAE, title BERT, Word2Vec, the neighbour members and popularity, ranked by the learned ranker that
   ``python -m inference.fit_blend`` fits on the tuning half; with the audio member's tail slots, fitted
   there too, when the run has a CNN and its audio index), the same members under the grid blend
   (``--method grid``), the ensemble without each member (its ranker refitted), and each model alone;
   ``python -m inference`` for each in its own process, for its inference time and peak memory.
4. Every results file is scored by the project's evaluator (``data.ndcg.evaluate``, overall and by
   question type) on the **report half** of the validation questions only, which nothing above was tuned
   on; the ratios to the best peer are reported beside the table. Writes RESULTS_DIR/quality_SCALE.json,
   .md (tables) and .png (bar chart).

Columns: *train s* is the fit time (peers: in their process; neural models: quickstart's ``timings.json``,
horovodrun wall seconds of the training stages, preprocessing listed apart); *inference s* is the time to
answer every question (peers: the ``recommend`` step after the fit; neural models: the whole
``python -m inference`` process, TensorFlow and model loading included); *peak GB* is the peak resident
memory of the process that fitted and answered (peers) or answered (neural models: training runs as two
horovodrun ranks and is not measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench.common import REPO, results_dir, run
from bench.peers import GRIDS
from data.melon import load_playlists, load_results
from data.task import QUESTION_TYPES
from data.ndcg import evaluate
from data.task import parts, select
from evaluate.table import markdown
from inference import members as registry

PEER_NAMES = ("popular", "genre_popular", "item_cf", "als", "ease", "playlist_cf")
# The neural systems: the members each runs with (run folders of the quickstart run), and the blend fitted on
# the tuning half that weighs them (inference.fit_blend --method: ranker or grid; then popularity is a member
# too), or None. The ablations leave one member out. Every member comes from inference/members.py: a trained
# member registered there gets its flag, its ablation and its row alone here; a neighbour kind with a
# quickstart folder its place in the ensemble and its row alone; the audio member its place in the ensemble
# where the run has its audio index.


DESCRIPTIONS = {  # the systems whose description is not generated from the members
    "ensemble_grid": "the same members blended by the grid search's weights per question type (inference/blend.py), "
                     "fitted on the tuning half",
    "ensemble_without_neighbours": "the ensemble without its two neighbour members (blend refitted)",
    "popular_official": "inference.popular: most popular unseen songs/tags, no release-date filter",
    "popular": "peer: most popular, release-date filtered",
    "genre_popular": "peer: most popular of the question's dominant genre",
    "item_cf": "peer: item-item cosine CF over songs, tags and title keywords",
    "als": "peer: implicit ALS over songs, tags and title keywords, questions folded in",
    "ease": "peer: EASE item-item closed form over the most frequent songs, tags and title keywords",
    "playlist_cf": "peer: playlist-neighbour CF, BM25-idf cosine over songs, tags and title keywords",
}


def members() -> dict[str, tuple[str, str, tuple]]:
    """member -> (inference flag, quickstart run folder, quickstart's timing keys of the stages that build it):
    the trained members, the neighbour kinds quickstart builds and the audio member (inference/members.py)."""
    trained = {m.name: (m.flag, m.folder, m.stages) for m in registry.MEMBERS}
    neighbours = {k.name: (registry.NEIGHBOURS.flag, k.folder, k.stages) for k in registry.quickstart_kinds()}
    audio = registry.AUDIO
    return {**trained, **neighbours, audio.name: (audio.flag, audio.folder, audio.stages)}


def optional_members() -> dict[str, str]:
    """member -> the file of a quickstart run without which the run lacks it (no spectrograms: no audio index);
    such a member is left out where its file is missing."""
    audio = registry.AUDIO
    return {audio.name: f"{audio.folder}/{audio.requires}"}


def neural_systems() -> dict[str, tuple[tuple, str | None]]:
    """system -> (its members, its blend method or None): the ensemble, its ablations, each member alone."""
    trained = tuple(m.name for m in registry.MEMBERS)
    kinds = registry.quickstart_kinds()
    neighbours = tuple(k.name for k in kinds)
    everything = trained + neighbours
    return {"ensemble": (everything + (registry.AUDIO.name,), "ranker"),
            "ensemble_without_audio": (everything, "ranker"),
            "ensemble_grid": (everything, "grid"),
            **{f"ensemble_without_{name}": (tuple(m for m in everything if m != name), "ranker") for name in trained},
            "ensemble_without_neighbours": (trained, "ranker"),
            "ensemble_without_neural": (neighbours, "ranker"),
            **{name: ((name,), None) for name in trained},
            **{k.folder: ((k.name,), None) for k in kinds}}


def descriptions() -> dict[str, str]:
    """system -> what it is, for the tables."""
    labels = [m.label for m in registry.MEMBERS]
    kinds = registry.quickstart_kinds()
    neighbours = " and ".join(k.label for k in kinds) + " neighbours"
    return {
        "ensemble": " + ".join(labels + [neighbours, registry.POPULARITY.label]) + ", ranked by the learned "
                    "ranker (inference/ranker.py) fitted on the tuning half; the audio member's songs outside the "
                    "vocabulary in the tail slots fitted per type (inference/audio_member.py), when the run has a CNN",
        **{f"ensemble_without_{m.name}": f"the ensemble without the {m.label} member (blend refitted)"
           for m in registry.MEMBERS},
        "ensemble_without_neural": "the ensemble without its trained models (" + ", ".join(labels) + "): neighbours + "
                                   + registry.POPULARITY.label,
        **{m.name: m.description for m in registry.MEMBERS},
        **{k.folder: k.description for k in kinds},
        "ensemble_without_audio": f"the ensemble without {registry.AUDIO.label} (the same ranker weights: the audio "
                                  "slots are fitted after them)",
        **DESCRIPTIONS,
    }




def log(message: str) -> None:
    print(f"[bench.quality] {message}", file=sys.stderr, flush=True)


def measured(cmd: list[str], log_path: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` (bench.common.run), output to ``log_path``; its wall seconds and peak RSS."""
    usage = run(cmd, log_path, env, name="bench.quality")
    return {"wall_s": usage["wall_s"], "peak_rss_gb": usage["peak_rss_gb"]}


def _env(peer: str | None = None) -> dict:
    """The environment of a measured command: the repository importable, and for ALS single-threaded BLAS
    (implicit parallelises itself and warns otherwise; numpy reads this at import). EASE's inverse and
    everything else keep every core."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if peer == "als":
        env["OPENBLAS_NUM_THREADS"] = "1"
    return env


# -------------------------------------------------------------------------------- data and models

def _synth_matches(data: Path, scale: str, seed: int) -> bool:
    try:
        info = json.loads((data / "synth_info.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return info.get("scale") == scale and info.get("seed") == seed


def _quickstart_finished(run: Path) -> bool:
    """Whether quickstart finished in ``run``: its score table, the export of the last neighbour kind it builds
    and the results of the ensemble, of each trained member alone and of inference.popular."""
    last_neighbours = registry.quickstart_kinds()[-1].folder
    results = ("ensemble", *(m.name for m in registry.MEMBERS), "popular")
    return (run / "scores/table.md").is_file() and (run / f"{last_neighbours}/export/config.json").is_file() and all(
        (run / f"results/{m}.json").is_file() for m in results)


def prepare(run: Path, scale: str, seed: int, skip_ensemble: bool, epochs: list[int] | None = None,
            steps_per_epoch: int | None = None) -> None:
    """The data, the split and (unless skip_ensemble) the trained models and their results in ``run``."""
    if skip_ensemble:
        if not _synth_matches(run / "data", scale, seed):
            measured([sys.executable, "-m", "data.synth", "--scale", scale, "--seed", str(seed), "--out",
                      str(run / "data"), "--force"], run / "logs/synth.log", _env())
        if not (run / "split/answers/val.json").is_file():
            measured([sys.executable, "-m", "data.split", str(run / "data/train.json"), "--out", str(run / "split"),
                      "--seed", "777"], run / "logs/split.log", _env())
        return
    if _quickstart_finished(run):
        log(f"{run}: a finished quickstart run (scores/table.md): reusing its models, results and timings")
        return
    run.parent.mkdir(parents=True, exist_ok=True)
    log_path = run.parent / f"quickstart-{scale}.log"
    cmd = ["bash", "launch/quickstart.sh", "--scale", scale, "--seed", str(seed), "--out", str(run)]
    if epochs:
        cmd += ["--dae-epochs", str(epochs[0]), "--pretrain-epochs", str(epochs[1]), "--finetune-epochs", str(epochs[2])]
    if steps_per_epoch:
        cmd += ["--steps-per-epoch", str(steps_per_epoch)]
    measured(cmd, log_path)


# -------------------------------------------------------------------------------- systems

def run_peers(run: Path, out: Path, tuned: list[str], tune_questions: int | None) -> dict:
    """Every peer of :data:`PEER_NAMES`; those in ``tuned`` first searched on the tuning half (their grids)."""
    split, meta = run / "split", run / "data/song_meta.json"
    systems = {}
    for name in PEER_NAMES:
        common = ["--split", str(split), "--meta", str(meta)]
        tuning = None
        settings = {}
        if name in tuned:
            path = out / f"tuning/{name}.json"
            limit = ["--questions-limit", str(tune_questions)] if tune_questions else []
            usage = measured([sys.executable, "-m", "bench.peers", "tune", name, *common, "--out", str(path), *limit],
                             out / f"logs/tune-{name}.log", _env(name))
            tuning = {**json.loads(path.read_text(encoding="utf-8")), "process": usage}
            settings = tuning["best"]
            log(f"{name}: tuned on {tuning['questions_scored']} questions in {usage['wall_s']:.0f} s: {settings}")
        results, timings = out / f"results/{name}.json", out / f"timings/{name}.json"
        usage = measured([sys.executable, "-m", "bench.peers", name, *common, "--out", str(results), "--timings",
                          str(timings), "--settings", json.dumps(settings)], out / f"logs/{name}.log", _env(name))
        t = json.loads(timings.read_text(encoding="utf-8"))
        systems[name] = {"kind": "peer", "results": str(results), "settings": t["settings"], "train_s": t["fit_s"],
                         "inference_s": t["recommend_s"], "load_s": t["load_s"], "process_wall_s": usage["wall_s"],
                         "peak_rss_gb": usage["peak_rss_gb"], "tuning": tuning}
        log(f"{name}: fit {t['fit_s']:.1f} s, recommend {t['recommend_s']:.1f} s, peak {usage['peak_rss_gb']:.2f} GB")
    return systems


def stage_folders() -> dict[str, str | None]:
    """quickstart's timings.json key of every stage that builds a member -> its run folder (None: it has none of
    its own), in inference/members.py's order: the trained members', the neighbour kinds', the audio member's."""
    folders = {stage: m.folder_of(stage) for m in registry.MEMBERS for stage in m.stages}
    folders.update({stage: k.folder for k in registry.quickstart_kinds() for stage in k.stages})
    folders.update({stage: registry.AUDIO.folder_of(stage) for stage in registry.AUDIO.stages})
    return folders


def training_seconds(run: Path) -> tuple[dict, str]:
    """Wall seconds of each training stage: quickstart's timings.json, or, for a run folder made without it,
    the span of the stage folder's file times (the trainer writes workdir.json once it has started and its
    checkpoints, export and TensorBoard events until it ends). That estimate leaves out the start-up before
    workdir.json (horovodrun, TensorFlow import: 25-30 s per stage on a tiny run here), and is labelled; the
    audio index has no folder of its own and is None there."""
    path = run / "timings.json"
    timings = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    folders = stage_folders()
    optional = registry.AUDIO.stages  # a run without spectrograms has neither: None, and no audio member
    if all(k in timings for k, folder in folders.items() if folder is not None and k not in optional):
        return {k: (float(timings[k]) if k in timings else None) for k in folders}, "timings.json"
    spans = {stage: None for stage, folder in folders.items() if folder is None}  # no folder of its own: no span
    for stage, folder in folders.items():
        if folder is None:
            continue
        times = [f.stat().st_mtime for f in (run / folder).rglob("*") if f.is_file()]
        start = run / folder / "workdir.json"
        spans[stage] = (max(times) - start.stat().st_mtime) if times and start.is_file() else None
    return spans, "the run folders' file times (no timings.json; start-up not included)"


def run_neural(run: Path, out: Path, names: list[str]) -> dict:
    """The neural systems and ablations of :func:`neural_systems` named in ``names``: each one's blend fitted on the
    tuning half where it has one (``python -m inference.fit_blend``), then ``python -m inference`` on every
    question, each timed."""
    stages, source = training_seconds(run)

    def total(*keys):
        return sum(stages[k] for k in keys) if all(stages.get(k) is not None for k in keys) else None

    timings = json.loads((run / "timings.json").read_text(encoding="utf-8")) if (run / "timings.json").is_file() else {}
    known, neural = members(), neural_systems()
    questions, systems = run / "split/questions/val.json", {}
    optional = optional_members()
    present = {m for m in known if m not in optional or (run / optional[m]).is_file()}
    for name, (chosen, method) in ((n, neural[n]) for n in names):
        chosen = tuple(m for m in chosen if m in present)
        models = [a for m in chosen for a in (known[m][0], str(run / known[m][1]))]
        common = ["--questions", str(questions), "--work", str(run / "work"), *models]
        blend, fit = [], None
        if method:
            path = out / f"blends/{name}.json"
            fit = measured([sys.executable, "-m", "inference.fit_blend", *common, "--answers",
                            str(run / "split/answers/val.json"), "--out", str(path), "--method", method],
                           out / f"logs/blend-{name}.log", _env())
            blend = ["--blend", str(path)]
        results = out / f"results/{name}.json"
        usage = measured([sys.executable, "-m", "inference", *common, *blend, "--out", str(results), "--no-progress"],
                         out / f"logs/{name}.log", _env())
        systems[name] = {"kind": "neural", "members": list(chosen), "results": str(results),
                         "train_s": total(*(k for m in chosen for k in known[m][2])), "train_s_from": source,
                         "training_stages_s": stages, "blend_fit_s": fit and fit["wall_s"],
                         "inference_s": usage["wall_s"], "peak_rss_gb": usage["peak_rss_gb"]}
    systems["popular_official"] = {"kind": "baseline", "results": str(run / "results/popular.json"), "train_s": None,
                                   "inference_s": timings.get("popular"), "peak_rss_gb": None}
    return systems


# -------------------------------------------------------------------------------- report

def _fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report_markdown(summary: dict) -> str:
    systems = summary["systems"]
    lines = [f"# Recommendation quality, `{summary['scale']}` scale", "",
             f"{summary['questions']} validation questions of the official split (the protocol's report half) "
             f"({summary['train_playlists']} training playlists); score = 0.85 music nDCG@100 + 0.15 tag nDCG@10. "
             "Made by `python -m bench.quality` (see its docstring for what each column measures).", "",
             "| system | score | music nDCG | tag nDCG | train s | inference s | peak GB | what |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    described = descriptions()
    for name, s in sorted(systems.items(), key=lambda kv: -kv[1]["scores"]["score"]):
        sc = s["scores"]
        lines.append(f"| {name} | {sc['score']:.4f} | {sc['music_ndcg']:.4f} | {sc['tag_ndcg']:.4f} | "
                     f"{_fmt(s['train_s'])} | {_fmt(s['inference_s'])} | {_fmt(s['peak_rss_gb'], 2)} | "
                     f"{described[name]} |")
    lines += ["", "By question type (`*`: the best score of the type):", "",
              markdown({name: s["scores"] for name, s in systems.items()}), ""]
    tuned = [(n, s) for n, s in systems.items() if s.get("tuning")]
    if tuned:
        lines += ["Peer settings, searched on "
                  f"{tuned[0][1]['tuning']['questions_scored']} questions of the tuning half (the best tuning score "
                  "of the grid):", ""]
        for name, s in tuned:
            t = s["tuning"]
            grid = ", ".join(f"{k} in {v}" for k, v in t["grid"].items())
            lines.append(f"- **{name}**: {json.dumps(s['settings'])} (grid: {grid}; {len(t['rows'])} settings in "
                         f"{t['process']['wall_s']:.0f} s; scores {min(r['score'] for r in t['rows']):.4f} to "
                         f"{t['best_score']:.4f})")
        lines.append("")
    if summary.get("ratios"):
        lines += ratios_markdown(summary["ratios"], systems)
    notes = summary.get("notes", [])
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None (no ratio) where either is missing or the denominator is 0."""
    return None if numerator is None or not denominator else numerator / denominator


def ratios(systems: dict) -> dict | None:
    """The issue's bars: the ensemble against the best peer (overall and by type), the ensemble without its
    neural members against the whole, and the DAE alone against the best peer.

    A ratio is None where its denominator is 0 or missing: a type's ``best_peer`` is the best of the peers
    scored on that type (None when none is), and its ``ratio`` None when that best score is 0. The types are
    those of the ensemble's scores; a system missing a type is left out of that type's comparison."""
    peers = {n: s for n, s in systems.items() if s["kind"] == "peer"}
    if "ensemble" not in systems or not peers:
        return None
    best = max(peers, key=lambda n: peers[n]["scores"]["score"])
    score = lambda name, t=None: (systems[name]["scores"]["score"] if t is None  # noqa: E731
                                  else systems[name]["scores"].get("by_type", {}).get(t, {}).get("score"))
    types = [t for t in QUESTION_TYPES if t in systems["ensemble"]["scores"].get("by_type", {})]
    by_type = {}
    for t in types:
        best_here = max((n for n in peers if score(n, t) is not None), key=lambda n: score(n, t), default=None)
        by_type[t] = {"best_peer": best_here,
                      "ratio": _ratio(score("ensemble", t), None if best_here is None else score(best_here, t))}
    return {"best_peer": best, "ensemble_vs_best_peer": _ratio(score("ensemble"), score(best)), "by_type": by_type,
            "without_neural_vs_ensemble": (_ratio(score("ensemble_without_neural"), score("ensemble"))
                                           if "ensemble_without_neural" in systems else None),
            "dae_vs_best_peer": _ratio(score("dae"), score(best)) if "dae" in systems else None,
            "ensemble_vs_without_audio": (_ratio(score("ensemble"), score("ensemble_without_audio"))
                                          if "ensemble_without_audio" in systems else None)}


def optional_ratios() -> tuple[tuple[str, str, str], ...]:
    """The ratios printed only when their system ran: (ratios' key, that system, the line's label)."""
    trained = ", ".join(m.label for m in registry.MEMBERS)
    return (("without_neural_vs_ensemble", "ensemble_without_neural",
             f"ensemble without its trained models ({trained}) / ensemble"),
            ("dae_vs_best_peer", "dae", "DAE alone / best peer"),
            ("ensemble_vs_without_audio", "ensemble_without_audio",
             f"ensemble / ensemble without {registry.AUDIO.label}"))


def ratios_markdown(r: dict, systems: dict | None = None) -> list[str]:
    """The Markdown lines of :func:`ratios`. A ratio without a figure (None: its denominator 0 or missing)
    reads n/a, a type that no peer was scored on names "no peer" as its best. The lines of
    :func:`optional_ratios` are left out when their system is not in ``systems`` (without ``systems``: when
    their ratio is None)."""
    lines = ["Against the bars (report half):", "",
             f"- ensemble / best peer ({r['best_peer']}): **{_fmt(r['ensemble_vs_best_peer'], 3)}**",
             "- by question type (ensemble / that type's best peer): " + ", ".join(
                 f"{t} {_fmt(v['ratio'], 3)} ({v['best_peer'] or 'no peer'})" for t, v in r["by_type"].items())]
    for key, system, label in optional_ratios():
        if (system in systems) if systems is not None else r.get(key) is not None:
            lines.append(f"- {label}: {_fmt(r.get(key), 3)}")
    return lines + [""]


def tuning_note(tuned: list[str]) -> str:
    where = ("Every score is measured on the report half of the validation questions (data/task.py), "
             "which nothing was tuned on. ")
    neural = ("The neural models' best epochs and the ensembles' blend weights were chosen on the tuning half.")
    if set(tuned) == set(GRIDS):
        return where + "The peers' grids were searched on the tuning half. " + neural
    if tuned:
        return (where + f"The grids of {', '.join(sorted(tuned))} were searched on the tuning half; the other peers "
                "use bench/peers.py's default settings. " + neural)
    return where + ("The peers use bench/peers.py's default settings (--no-tune): item_cf's, ease's and "
                    "playlist_cf's are the best of their grids on small's tuning half; als's come from an earlier "
                    "search on the first 1,000 validation questions, which overlap the report half, so its score "
                    "may be a little optimistic. ") + neural


def chart(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = sorted(summary["systems"].items(), key=lambda kv: -kv[1]["scores"]["score"])
    kinds = ["all"] + [t for t in QUESTION_TYPES if any(t in s["scores"].get("by_type", {}) for _, s in systems)]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / len(systems)
    x = np.arange(len(kinds))
    for i, (name, s) in enumerate(systems):
        values = [s["scores"]["score"] if k == "all" else s["scores"].get("by_type", {}).get(k, {}).get("score", 0.0)
                  for k in kinds]
        ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, label=name,
               hatch=None if s["kind"] == "neural" else "//", edgecolor="white", linewidth=0.5)
    counts = systems[0][1]["scores"]
    ax.set_xticks(x, [f"{k}\n(n={counts['n'] if k == 'all' else counts['by_type'].get(k, {}).get('n', 0)})"
                      for k in kinds])
    ax.set_ylabel("score (0.85 song nDCG@100 + 0.15 tag nDCG@10)")
    ax.set_title(f"Melon playlist continuation, synthetic {summary['scale']} scale, "
                 f"{summary['questions']} validation questions (hatched: peers and baselines)")
    ax.legend(ncol=4, fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=["tiny", "small", "melon"], required=True)
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed (quickstart's --seed)")
    parser.add_argument("--out-root", type=Path, default=REPO / "runs",
                        help="holds quickstart-SCALE (data, split, models) and quality-SCALE (peer results, logs); "
                             "default: the repository's runs/")
    parser.add_argument("--results-dir", type=Path, default=results_dir(),
                        help="where quality_SCALE.json/.md/.png go")
    parser.add_argument("--skip-ensemble", action="store_true", help="peers only: no model training or inference")
    parser.add_argument("--epochs", type=int, nargs=3, metavar=("DAE", "PRETRAIN", "FINETUNE"),
                        help="quickstart's training epochs when it has to train (default: quickstart's 2 20 3)")
    parser.add_argument("--steps-per-epoch", type=int,
                        help="quickstart's --steps-per-epoch: cap each training epoch (time-budget runs at melon scale)")
    parser.add_argument("--no-tune", action="store_true", help="use bench/peers.py's default settings")
    parser.add_argument("--tune-peers", nargs="+", choices=sorted(GRIDS), default=sorted(GRIDS), metavar="PEER",
                        help="tune only these peers, the others on their defaults (default: every peer with a grid: "
                             + ", ".join(sorted(GRIDS)) + ")")
    neural = list(neural_systems())
    parser.add_argument("--systems", nargs="+", choices=neural, default=neural, metavar="SYSTEM",
                        help="the neural systems and ablations to run (default: all: " + ", ".join(neural) + ")")
    parser.add_argument("--tune-questions", type=int, default=0,
                        help="tune the peers on the first N questions of the tuning half (default 0: all of it)")
    args = parser.parse_args(argv)
    out_root = args.out_root.resolve()
    run, out = out_root / f"quickstart-{args.scale}", out_root / f"quality-{args.scale}"
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]

    prepare(run, args.scale, args.seed, args.skip_ensemble, args.epochs, args.steps_per_epoch)
    tuned = [] if args.no_tune else args.tune_peers
    systems = run_peers(run, out, tuned, tune_questions=args.tune_questions or None)
    if not args.skip_ensemble:
        systems.update(run_neural(run, out, args.systems))

    every_question = load_playlists(run / "split/questions/val.json")
    report = parts(every_question)["report"]  # every figure is the report half's: nothing was tuned on it
    answers = select(load_playlists(run / "split/answers/val.json"), report)
    questions = select(every_question, report)
    train_count = len(load_playlists(run / "split/orig/train.json"))
    described = descriptions()
    for name, s in systems.items():
        s["description"] = described[name]
        s["scores"] = evaluate(answers, select(load_results(s["results"]), report), questions)
    timings = json.loads((run / "timings.json").read_text(encoding="utf-8")) if (run / "timings.json").is_file() else {}
    notes = [tuning_note(tuned),
             f"Peer and inference timings are wall seconds measured by this command on this {os.cpu_count()}-core "
             f"machine; its 1-minute load average was {load_at_start:.2f} at the start and {os.getloadavg()[0]:.2f} "
             "at the end (about 1 per busy core: anything above what the benchmark itself runs means other jobs "
             "shared the machine)."]
    if not args.skip_ensemble:
        source = systems["ensemble"]["train_s_from"]
        pre = timings.get("preprocess")
        budget = f", epochs capped at {args.steps_per_epoch} steps" if args.steps_per_epoch else ""
        notes.append(f"Neural training: horovodrun -np 2, quickstart's short schedule{budget}; seconds from " + source + ". "
                     + (f"They also need the preprocessing (mpirun -np 2): {pre} s." if pre is not None else
                        "They also need the preprocessing (mpirun -np 2), not timed in this run folder."))
    summary = {"scale": args.scale, "seed": args.seed, "quickstart_epochs": args.epochs,
               "steps_per_epoch": args.steps_per_epoch, "run": str(run), "peer_outputs": str(out),
               "questions": len(questions), "train_playlists": train_count, "cpus": os.cpu_count(),
               "quickstart_timings": timings, "systems": systems, "ratios": ratios(systems), "notes": notes,
               "wall_s": time.perf_counter() - started}
    out_dir = args.results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"quality_{args.scale}.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out_dir / f"quality_{args.scale}.md").write_text(report_markdown(summary), encoding="utf-8")
    chart(summary, out_dir / f"quality_{args.scale}.png")
    print(report_markdown(summary))
    log(f"written {out_dir}/quality_{args.scale}.{{json,md,png}} in {summary['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
