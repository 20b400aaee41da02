"""Ensemble inference on real exports of tiny trained models: valid results, filters, blend, bad input.

The models, neighbour members and fitted blend are those of the session's tiny main job (``quickstart_tiny``
in tests/conftest.py: launch/quickstart.sh --scale tiny, two-rank training), with its data, split and work
directory; nothing is trained here. Every slow test of this file may be the first to need that job.

The error paths of ``python -m inference`` run in the fast tier without it: bad questions files (read before
anything else), no model, an export of the wrong kind, a question dated before 100 songs were released and an
unwritable --out, on the session's work directory (``workdirs``) with a neighbour member made from it (no
training) or a hand-made export folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import FLOOR_ENSEMBLE_OVER_POPULAR, FLOOR_MEMBER_OVER_POPULAR, load, run_module, without_fallback
from data.vocab import updt_day

# the first test to request the tiny main job waits for all of it (tests/conftest.py's quickstart_tiny)
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def runs(quickstart_tiny):
    """The tiny main job's work directory, its DAE and its fine-tuned title model (one epoch each, two ranks)."""
    run = quickstart_tiny
    return run / "work", run / "dae", run / "title-finetune"


@pytest.fixture(scope="module")
def split_dir(quickstart_tiny):
    """The official split the tiny main job made (questions/val.json, answers/val.json, orig/train.json)."""
    return quickstart_tiny / "split"


@pytest.fixture(scope="module")
def data_dir(quickstart_tiny):
    """The tiny main job's synthetic data (train.json, song_meta.json)."""
    return quickstart_tiny / "data"


def infer(work, dae, title, questions, out, *extra, check=True) -> subprocess.CompletedProcess:
    args = ["--questions", questions, "--work", work, "--out", out, "--no-progress", *extra]
    args += ["--dae", dae] if dae else []
    args += ["--title", title] if title else []
    return run_module("inference", *args, check=check)


@pytest.fixture
def cli(capsys):
    """Run ``python -m inference`` (or ``fit_blend``) in this process: ``cli(*args, module="inference")`` gives
    its exit status and what it wrote (returncode, stdout, stderr), as a subprocess would, without paying the
    TensorFlow import per call. Log lines go to pytest's log capture, not stderr."""
    from inference.__main__ import main as inference_main
    from inference.fit_blend import main as fit_blend_main

    def call(*args, module: str = "inference"):
        main = {"inference": inference_main, "inference.fit_blend": fit_blend_main}[module]
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
    return call


def assert_one_error(proc: subprocess.CompletedProcess, *words) -> None:
    """Exit status 2 (python -m inference's for every refusal), no traceback, nothing on stdout and exactly
    one ``error: ...`` line on stderr holding every word (log lines may precede it)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], (word, errors[0])


QUESTION = {"id": 7, "plylst_title": "", "songs": [], "tags": [], "like_cnt": 0,
            "updt_date": "2030-01-01 00:00:00.000"}


@pytest.fixture(scope="module")
def neighbour_run(workdirs, tmp_path_factory):
    """An item_cf neighbour member of the session's work directory (python -m inference.neighbours: a
    co-occurrence matrix, no training): the one model the fast error-path tests give."""
    out = tmp_path_factory.mktemp("neighbours") / "item_cf"
    run_module("inference.neighbours", "--work", workdirs[0], "--out", out)
    return workdirs[0], out


def test_no_model_is_a_usage_error(tmp_path, cli):
    q_file = tmp_path / "q.json"
    q_file.write_text(json.dumps([QUESTION]), encoding="utf-8")
    proc = cli("--questions", q_file, "--work", tmp_path, "--out", tmp_path / "r.json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""  # argparse's usage error
    assert proc.stderr.splitlines()[-1] == ("python -m inference: error: give at least one of --dae, --title, "
                                            "--word2vec, --neighbours")
    assert not (tmp_path / "r.json").exists()


def test_fit_blend_on_no_questions_is_one_error_line(neighbour_run, tmp_path, cli):
    workdir, item_cf = neighbour_run
    empty = tmp_path / "q.json"
    empty.write_text("[]", encoding="utf-8")
    proc = cli("--questions", empty, "--answers", empty, "--work", workdir, "--neighbours", item_cf,
               "--out", tmp_path / "blend.json", module="inference.fit_blend")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1].startswith(f"error: {empty} has no questions")
    assert not (tmp_path / "blend.json").exists()


def fake_export(folder, manifest: dict, model: str):
    """A hand-made export folder of a ``model`` kind for this work directory's vocabulary and tokenizer: a
    config.json naming the kind (no model_config or sizes: nothing could be built from it) and an empty
    weights.npz."""
    export = folder / "export"
    export.mkdir(parents=True)
    (export / "config.json").write_text(json.dumps({
        "model": model, "vocab_sha256": manifest["files"]["vocab.json"]["sha256"],
        "tokenizer_sha256": manifest["files"]["title.model"]["sha256"]}), encoding="utf-8")
    np.savez(export / "weights.npz")
    return folder


@pytest.mark.parametrize("flag, export, words", [
    ("--dae", "title_finetune", "its export is a 'title_finetune' model, expected dae"),
    ("--title", "dae", "its export is a 'dae' model, expected title_finetune"),
    ("--word2vec", "neighbours", "its export is a 'neighbours' model, expected word2vec"),
    ("--neighbours", "dae", "its export is a 'dae' model, expected neighbours"),
    ("--dae", "item_cf", "its export is a 'neighbours' model, expected dae"),  # the real neighbour member
])
def test_an_export_of_another_kind_is_refused_before_any_model_loads(neighbour_run, tmp_path, flag, export, words,
                                                                     cli):
    work, neighbours = neighbour_run
    manifest = load(work / "manifest.json")
    run = neighbours if export == "item_cf" else fake_export(tmp_path / "run", manifest, export)
    q_file = tmp_path / "q.json"
    q_file.write_text(json.dumps([QUESTION]), encoding="utf-8")
    proc = cli("--questions", q_file, "--work", work, flag, run, "--out", tmp_path / "r.json", "--no-progress")
    assert_one_error(proc, f"{run}: {words}")
    assert not (tmp_path / "r.json").exists()


def test_a_question_dated_before_100_songs_were_released_is_refused(neighbour_run, tmp_path, cli):
    work, neighbours = neighbour_run
    with np.load(work / "release_dates.npz") as f:
        release = f["release_dates"]
    day = int(np.sort(release)[50])  # 51 songs (or a few more on the same day) released by then, not 100
    assert (release <= day).sum() < 100 <= (release <= 20300101).sum()
    date = f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d} 00:00:00.000"
    q_file = tmp_path / "q.json"
    q_file.write_text(json.dumps([QUESTION, dict(QUESTION, id=8, updt_date=date)]), encoding="utf-8")
    proc = cli("--questions", q_file, "--work", work, "--neighbours", neighbours, "--out", tmp_path / "r.json",
               "--no-progress")
    assert_one_error(proc, "question id 8: fewer than 100 songs released by its update date")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_an_unwritable_out_is_refused(neighbour_run, tmp_path, where, cli):
    work, neighbours = neighbour_run
    q_file = tmp_path / "q.json"
    q_file.write_text(json.dumps([QUESTION]), encoding="utf-8")
    if where == "a folder":
        out = tmp_path / "results"
        out.mkdir()
    else:
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "r.json"
    proc = cli("--questions", q_file, "--work", work, "--neighbours", neighbours, "--out", out, "--no-progress")
    assert_one_error(proc, f"{out}: cannot write")
    if where == "a folder":
        assert list(out.iterdir()) == []
    else:
        assert (tmp_path / "file").read_text() == ""
    assert list(tmp_path.rglob("*.tmp")) == []  # no temporary file left behind


@pytest.mark.slow
def test_results_are_valid_filtered_and_scored_by_the_official_evaluator(runs, split_dir, data_dir, tmp_path):
    work, dae, title = runs
    questions_file = split_dir / "questions/val.json"
    out = tmp_path / "results.json"
    infer(work, dae, title, questions_file, out)
    questions, results = load(questions_file), load(out)
    assert [r["id"] for r in results] == [q["id"] for q in questions]
    with np.load(work / "release_dates.npz") as f:
        release = f["release_dates"]
    for q, r in zip(questions, results):
        assert len(r["songs"]) == len(set(r["songs"])) == 100 and len(r["tags"]) == len(set(r["tags"])) == 10
        assert not set(r["songs"]) & set(q["songs"]) and not set(r["tags"]) & set(q["tags"])
        assert all(release[s] <= updt_day(q["updt_date"]) for s in r["songs"])  # nothing released after the update
    scores = json.loads(run_module("evaluate", "--gt", split_dir / "answers/val.json", "--rec", out, "--json").stdout)
    popular = json.loads(run_module("evaluate", "--gt", split_dir / "answers/val.json", "--rec",
                                    split_dir.parent / "results/popular.json", "--json").stdout)
    assert scores["score"] >= FLOOR_MEMBER_OVER_POPULAR * popular["score"], (scores, popular)  # tests/conftest.py


@pytest.mark.slow
def test_blend_follows_the_models_and_title_only_questions_use_the_title_model(runs, split_dir, tmp_path):
    work, dae, title = runs
    questions = load(split_dir / "questions/val.json")
    title_only = [q for q in questions if not q["songs"] and not q["tags"]][:5]
    with_items = [q for q in questions if q["songs"]][:5]
    assert title_only and with_items
    q_file = tmp_path / "q.json"
    q_file.write_text(json.dumps(title_only + with_items, ensure_ascii=False), encoding="utf-8")
    config = without_fallback(tmp_path)  # the models themselves (one epoch: below popularity, which would answer)
    for name, d, t in (("both", dae, title), ("dae", dae, None), ("title", None, title)):
        infer(work, d, t, q_file, tmp_path / f"{name}.json", "--config", config)
    both, dae_only, title_alone = (load(tmp_path / f"{n}.json") for n in ("both", "dae", "title"))
    n = len(title_only)
    # nothing given: the reference formula gives the title model all the song weight (the DAE, which reads
    # titles too, still adds its tag probabilities)
    assert [r["songs"] for r in both[:n]] == [r["songs"] for r in title_alone[:n]]
    assert both[n:] != dae_only[n:] and both[n:] != title_alone[n:]  # given items: a blend of both
    # the DAE alone answers a title-only question from its title (configs/dae.yaml model.title), not with
    # the popularity fallback's one list for all of them
    assert len({tuple(r["songs"]) for r in dae_only[:n]}) == n


@pytest.mark.slow
def test_unknown_items_are_ignored_and_counted(runs, split_dir, tmp_path):
    work, dae, title = runs
    q = dict(load(split_dir / "questions/val.json")[0])
    q["songs"] = q["songs"][:3] + [10**9]
    q["tags"] = ["a tag nobody has used"]
    q_file = tmp_path / "q.json"
    q_file.write_text(json.dumps([q], ensure_ascii=False), encoding="utf-8")
    proc = infer(work, dae, title, q_file, tmp_path / "r.json")
    assert "1 given song ids are not in this work directory's song_meta.json: ignored" in proc.stderr
    assert "and 1 given tags are outside the model vocabularies" in proc.stderr
    assert len(load(tmp_path / "r.json")[0]["songs"]) == 100


@pytest.mark.parametrize("content, message", [
    ("[{\"id\": 1,", "not valid JSON"),
    (json.dumps([{"plylst_title": "x", "songs": [], "tags": [], "like_cnt": 0, "updt_date": "2020-01-01 00:00:00.000"}]),
     "'id'"),
    (json.dumps([{"id": 1, "plylst_title": "x", "songs": ["7"], "tags": [], "like_cnt": 0,
                  "updt_date": "2020-01-01 00:00:00.000"}]), "field 'songs'"),
    (json.dumps([{"id": 1, "plylst_title": "x", "songs": [], "tags": [], "like_cnt": 0,
                  "updt_date": "2020-01-01 00:00:00.000"}] * 2), "duplicate id"),
])
def test_bad_questions_files_are_refused_with_the_record_named(tmp_path, content, message, cli):
    """The questions are read before the work directory and any model: these need no trained run (the work
    and model folders named here do not even exist)."""
    q_file = tmp_path / "q.json"
    q_file.write_text(content, encoding="utf-8")
    proc = cli("--questions", q_file, "--work", tmp_path / "no-work", "--dae", tmp_path / "no-dae", "--title",
               tmp_path / "no-title", "--out", tmp_path / "r.json", "--no-progress")
    assert_one_error(proc, str(q_file), message)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_a_model_from_another_work_directory_is_refused(runs, split_dir, tmp_path):
    work, dae, title = runs
    other = tmp_path / "other"
    shutil.copytree(work, other)
    vocab = load(other / "vocab.json")
    vocab["tags"] = vocab["tags"][::-1]  # another vocabulary: same sizes, other order
    (other / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    manifest = load(other / "manifest.json")
    from data.workdir import sha256_file
    manifest["files"]["vocab.json"]["sha256"] = sha256_file(other / "vocab.json")
    (other / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    proc = infer(other, dae, None, split_dir / "questions/val.json", tmp_path / "r.json", check=False)
    assert proc.returncode == 2 and "trained with another vocab.json" in proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_one_playlist_from_the_command_line(runs, data_dir):
    work, dae, title = runs
    song = load(data_dir / "train.json")[0]["songs"][0]
    args = ["--work", work, "--dae", dae, "--title", title, "--title-text", "새벽 감성 발라드", "--songs", song,
            "--tags", "힐링", "--top", "5"]
    proc = run_module("inference.recommend", *args, "--meta", data_dir / "song_meta.json")
    # --meta means the same in every entry point: the file, or the data folder holding it
    assert run_module("inference.recommend", *args, "--meta", data_dir).stdout == proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("playlist: title '새벽 감성 발라드', 1 songs, tags ['힐링']")
    assert sum(1 for line in lines if line.strip()[:1].isdigit()) == 5 + 10  # 5 songs shown, then 10 tags
    assert f"({song})" not in proc.stdout  # the given song is never recommended


@pytest.mark.slow
def test_a_question_with_nothing_usable_gets_date_filtered_popularity(runs, tmp_path):
    work, dae, title = runs
    question = {"id": 7, "plylst_title": "🎵", "songs": [], "tags": [], "like_cnt": 0,
                "updt_date": "2019-01-01 00:00:00.000"}  # the emoji-only title normalises to nothing
    q_file = tmp_path / "q.json"
    q_file.write_text(json.dumps([question], ensure_ascii=False), encoding="utf-8")
    infer(work, dae, title, q_file, tmp_path / "r.json")
    result = load(tmp_path / "r.json")[0]
    vocab = load(work / "vocab.json")
    with np.load(work / "release_dates.npz") as f:
        release = f["release_dates"]
    assert result["songs"] == [s for s, _ in vocab["songs"] if release[s] <= 20190101][:100]
    assert result["tags"] == [t for t, _ in vocab["tags"]][:10]


@pytest.fixture(scope="module")
def blended(quickstart_tiny):
    """The tiny main job's neighbour members (python -m inference.neighbours --kind item_cf, playlist_cf) and
    its blend of all the models, fitted on the tuning half of the validation questions (inference.fit_blend);
    the test below reads the playlist member from the folder next to the item one."""
    run = quickstart_tiny
    assert (run / "playlists/export/config.json").is_file() and (run / "blend.json").is_file()
    return run / "neighbours", run / "blend.json", (run.parent / "quickstart-tiny.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_fitted_blend_gives_valid_results_and_records_what_it_was_fitted_on(runs, blended, split_dir, quickstart_tiny,
                                                                              tmp_path):
    from data.task import parts

    work, dae, title = runs
    neighbours, blend_file, log = blended
    questions = load(split_dir / "questions/val.json")
    blend = load(blend_file)
    assert blend["members"] == ["dae", "title", "word2vec", "item_cf", "playlist_cf", "popular"]  # quickstart's
    assert blend["tuning_questions"] == len(parts(questions)["tune"]) < len(questions)
    assert blend["method"] == "ranker"  # fit_blend's default: inference/ranker.py's weights per kind and type
    for kind in ("songs", "tags"):
        for t in ("songs-only", "songs+tags", "tags-only", "title-only"):
            weights = blend["ranker"]["weights"][kind][t]
            assert set(weights["members"]) == set(blend["members"]) and len(weights["item"]) == 3
            assert all(len(w) == 4 and all(np.isfinite(w)) for w in weights["members"].values())
    out = tmp_path / "r.json"
    infer(work, dae, title, split_dir / "questions/val.json", out, "--word2vec", quickstart_tiny / "word2vec",
          "--neighbours", neighbours, "--neighbours", neighbours.parent / "playlists", "--blend", blend_file)
    results = load(out)
    assert [r["id"] for r in results] == [q["id"] for q in questions]
    for q, r in zip(questions, results):
        assert len(set(r["songs"])) == 100 and len(set(r["tags"])) == 10
        assert not set(r["songs"]) & set(q["songs"]) and not set(r["tags"]) & set(q["tags"])
    report = json.loads(run_module("evaluate", "--gt", split_dir / "answers/val.json", "--rec", out, "--questions",
                                   split_dir / "questions/val.json", "--part", "report", "--json").stdout)
    assert report["part"] == "report" and report["n"] == len(parts(questions)["report"])
    popular = load(quickstart_tiny / "scores/popular.json")["score"]  # the same report questions
    assert report["score"] >= FLOOR_ENSEMBLE_OVER_POPULAR * popular, (report["score"], popular)  # tests/conftest.py


@pytest.mark.slow
def test_a_blend_for_other_members_is_refused(runs, blended, split_dir, tmp_path):
    work, dae, title = runs
    neighbours, blend_file, _ = blended
    proc = infer(work, dae, None, split_dir / "questions/val.json", tmp_path / "r.json", "--neighbours", neighbours,
                 "--blend", blend_file, check=False)
    assert proc.returncode == 2 and "fitted for the members" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_the_neighbour_member_alone_recommends_co_occurring_songs(runs, blended, split_dir, tmp_path):
    """A question made of one training playlist's first songs: the neighbour member ranks that playlist's
    other songs above the popularity ranking does."""
    work, _, _ = runs
    neighbours, _, _ = blended
    train = [p for p in load(split_dir / "orig/train.json") if len(p["songs"]) >= 20][:10]
    questions = [{**p, "id": 10_000 + i, "songs": p["songs"][:5], "tags": [], "updt_date": "2030-01-01 00:00:00.000"}
                 for i, p in enumerate(train)]
    q_file = tmp_path / "q.json"
    q_file.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    proc = run_module("inference", "--questions", q_file, "--work", work, "--neighbours", neighbours, "--out",
                      tmp_path / "r.json", "--no-progress")
    assert "item_cf" in proc.stderr
    popular = [s for s, _ in load(work / "vocab.json")["songs"]]
    hits = lambda ranked, p: len(set(ranked[:100]) & set(p["songs"][5:]))  # noqa: E731
    ours = sum(hits(r["songs"], p) for r, p in zip(load(tmp_path / "r.json"), train))
    theirs = sum(hits([s for s in popular if s not in p["songs"][:5]], p) for p in train)
    assert ours > theirs
