"""The DAE trainer under real Horovod ranks: ranks stay in sync, loss falls, the learning rate follows
the formula at np=1 and np=2, resume restores everything, and bad configs fail fast on every rank.

The two-rank, three-epoch run most tests read is the session's ``dae_run`` (tests/conftest.py), trained
once; the fast tier's one real two-rank training is its weight-checksum test here."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import DAE_RUN_SETTINGS, REPO, run_module, without_fallback
from conftest import train_dae as train  # horovodrun -np N hvd_train/dae.py with the tiny settings (DAE_FAST)
from models.layers import Encoder


def epoch_lines(output: str) -> list[tuple[int, float, float]]:
    return [(int(e), float(loss), float(lr)) for e, loss, lr in
            re.findall(r"\[dae\] epoch (\d+): loss ([0-9.]+), lr ([0-9.e+-]+)", output)]


@pytest.fixture(scope="module")
def work(workdirs):
    return workdirs[0]


def test_last_block_on_cls_positions_only_is_exact():
    encoder = Encoder(32, 2, 2, 64, "gelu", 0.0)
    x = tf.random.normal([3, 20, 32])
    mask = tf.sequence_mask([20, 9, 4], 20)
    np.testing.assert_allclose(encoder(x, mask, False)[:, :3].numpy(), encoder(x, mask, False, outputs=3).numpy(), atol=1e-5)


def test_two_real_ranks_end_with_identical_weights(dae_run):
    """The fast tier's one real `horovodrun -np 2` training (3 tiny epochs, the session's ``dae_run``)."""
    run, out = dae_run
    assert "2 ranks on CPU" in out and "global batch 128 (64 x 2 ranks)" in out
    assert "controller MPI, allreduce over MPI, 5 ms cycle, waiting ranks yield" in out  # polling_defaults
    checksums = re.search(r"weight checksums by rank: \[([^\]]+)\]", out).group(1).split(", ")
    assert len(checksums) == 2 and len(set(checksums)) == 1  # identical weights on both ranks
    assert [e for e, _, _ in epoch_lines(out)] == [1, 2, 3] and (run / "export/weights.npz").is_file()


@pytest.mark.slow
def test_two_ranks_stay_in_sync_loss_falls_and_lr_follows_the_formula(dae_run):
    run, out = dae_run  # 3 epochs at np 2 without dropout; its checksums: the test above
    epochs = epoch_lines(out)
    assert [e for e, _, _ in epochs] == [1, 2, 3]
    # the loss falls (softmax item loss of the hidden items, from about log(vocabulary): 9.8 -> 8.9 here; it
    # falls slower than with loss.targets=all, which can also learn to copy its input)
    assert epochs[-1][1] < 0.93 * epochs[0][1]
    scores = [float(x) for x in re.findall(r"validation music [0-9.]+ tag [0-9.]+ score ([0-9.]+)", out)]
    assert len(scores) == 3 and scores[-1] > scores[0]  # and the model learns
    steps = int(re.search(r"(\d+) steps per epoch", out).group(1))
    assert "global batch 128 (64 x 2 ranks)" in out and "linear scaling over 2 ranks" in out
    for epoch, _, lr in epochs:  # scale 2 (linear) x 48^-0.5 x min(s^-0.5, s x 20^-1.5) at the last step
        s = epoch * steps
        assert lr == pytest.approx(2 * 48 ** -0.5 * min(s ** -0.5, s * 20 ** -1.5), rel=1e-4)
    assert re.search(r"validation music [0-9.]+ tag [0-9.]+ score [0-9.]+", out)
    assert (run / "export/weights.npz").exists() and (run / "export/config.json").exists()
    assert (run / "tensorboard").is_dir() and list((run / "checkpoints").glob("ckpt-3*"))
    from bench.dae_curves import curve  # bench.dae_curves reads the same curve back from TensorBoard

    recorded = curve(run)
    assert [r["epoch"] for r in recorded] == [1, 2, 3]
    assert [r["score"] for r in recorded] == pytest.approx(scores, abs=5e-5)
    assert [r["lr"] for r in recorded] == pytest.approx([lr for _, _, lr in epochs], rel=1e-3)


@pytest.mark.slow
def test_lr_schedule_at_one_rank_with_sqrt_scaling_a_multiplier_and_the_generalisation_levers(work, tiny_split, tmp_path):
    """One rank, sqrt scaling and lr_multiplier 0.5, with hidden targets, an untied output table, weight
    decay and the title segment on: the schedule follows the formula, the export carries the untied table
    and the piece rows, and the exported DAE answers a title-only question from its title. The trainer runs
    as one plain process here (python hvd_train/dae.py, no horovodrun), as a user may start it."""
    out = train(None, work, tmp_path / "run", "--set", "train.epochs=1", "--set", "train.lr_scaling=sqrt",
                "--set", "train.lr_multiplier=0.5", "--set", "loss.targets=hidden", "--set", "model.tied_output=false",
                "--set", "train.weight_decay=0.5", "--set", "model.title=true").stdout
    steps = int(re.search(r"(\d+) steps per epoch", out).group(1))
    (_, loss, lr), = epoch_lines(out)
    assert "global batch 64 (64 x 1 ranks)" in out and math.isfinite(loss)
    assert lr == pytest.approx(0.5 * math.sqrt(1) * 48 ** -0.5 * min(steps ** -0.5, steps * 20 ** -1.5), rel=1e-3)  # 4 digits
    sizes = json.loads((work / "manifest.json").read_text())["sizes"]
    with np.load(tmp_path / "run/export/weights.npz") as weights:
        assert any("output_table" in name for name in weights.files)
        table, = (weights[n] for n in weights.files if n.endswith("embedding"))
    assert table.shape[0] == sizes["songs"] + sizes["tags"] + sizes["artists"] + sizes["title_pieces"] + 4
    questions = [q for q in json.loads((tiny_split / "questions/val.json").read_text()) if not q["songs"] and
                 not q["tags"] and q["plylst_title"]][:4]
    (tmp_path / "q.json").write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    # the model itself answers (a run this short scores below popularity, which would otherwise answer for it)
    run_module("inference", "--questions", tmp_path / "q.json", "--work", work, "--dae", tmp_path / "run",
               "--out", tmp_path / "r.json", "--no-progress", "--config", without_fallback(tmp_path))
    answers = json.loads((tmp_path / "r.json").read_text())
    assert len(questions) >= 2 and len({tuple(a["songs"]) for a in answers}) == len(questions)  # not popularity


@pytest.mark.slow
def test_the_references_bce_item_loss_trains_and_the_ranking_term_starts_at_rank_from_epoch(work, tmp_path):
    """One plain process, 2 epochs of 3 steps, ``item_loss: bce`` with the ranking term from epoch 2 at a weight
    of 1000: epoch 1's loss is on BCE's scale (about log 2 per class at the start, where the softmax loss of
    this vocabulary is about 9.8), and epoch 2's carries the ranking term (1000 x a BCE near log 2)."""
    out = train(None, work, tmp_path / "run", "--set", "train.epochs=2", "--set", "train.steps_per_epoch=3",
                "--set", "loss.item_loss=bce", "--set", "loss.rank_weight=1000", "--set", "loss.rank_from_epoch=2").stdout
    (e1, first, _), (e2, second, _) = epoch_lines(out)
    assert (e1, e2) == (1, 2) and 0 < first < 2.0 and second > 100.0
    config = json.loads((tmp_path / "run/export/config.json").read_text())
    assert config["trained_with"]["loss"]["item_loss"] == "bce" and config["trained_with"]["loss"]["rank_from_epoch"] == 2


@pytest.mark.slow
def test_resume_restores_step_optimizer_slots_and_best_score(work, dae_run, tmp_path):
    """Two epochs, then a rerun to three: the same weights, slots and step as ``dae_run``'s three straight
    epochs (the same settings; no dropout, whose per-rank streams a resume does not restore)."""
    straight_run, _ = dae_run
    assert "model.dropout=0.0" in DAE_RUN_SETTINGS and "train.epochs=3" in DAE_RUN_SETTINGS
    no_dropout = ["--set", "model.dropout=0.0"]
    first = train(2, work, tmp_path / "resumed", "--set", "train.epochs=2", *no_dropout).stdout
    best = float(re.search(r"done: best validation score ([0-9.]+)", first).group(1))
    steps = int(re.search(r"(\d+) steps per epoch", first).group(1))
    second = train(2, work, tmp_path / "resumed", "--set", "train.epochs=3", *no_dropout).stdout
    assert re.search(rf"resumed from .*ckpt-2: epoch 2, step {2 * steps}, best score {best:.4f}", second)
    assert [e for e, _, _ in epoch_lines(second)] == [3]
    straight = tf.train.load_checkpoint(str(straight_run / "checkpoints/ckpt-3"))
    resumed = tf.train.load_checkpoint(str(tmp_path / "resumed/checkpoints/ckpt-3"))
    names = [n for n in straight.get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    assert any("optimizer/m" in n for n in names) and any("optimizer/v" in n for n in names)
    for name in names:  # slots, step counter and weights all continue exactly where they stopped
        np.testing.assert_allclose(resumed.get_tensor(name), straight.get_tensor(name), rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_two_ranks_accumulating_two_batches_per_step_stay_in_sync_and_count_steps_as_updates(work, tmp_path):
    """``train.accumulation_steps=2`` at np 2: a step is two batches per rank and one allreduce, the epoch has
    half the steps, the schedule counts them, and both ranks end on the same weights."""
    proc = train(2, work, tmp_path / "run", "--set", "train.epochs=2", "--set", "train.accumulation_steps=2")
    out = proc.stdout
    assert "global batch 256 (64 x 2 ranks x 2 accumulated batches)" in out
    steps = int(re.search(r"(\d+) steps per epoch", out).group(1))
    batches = int(re.search(r"epoch 1/2: .*?\| \d+/(\d+)", proc.stdout + proc.stderr).group(1))
    assert steps == batches // 2 and steps >= 1
    for epoch, _, lr in epoch_lines(out):  # scale 2 x 48^-0.5 x min(s^-0.5, s x 20^-1.5) at the epoch's last update
        s = epoch * steps
        assert lr == pytest.approx(2 * 48 ** -0.5 * min(s ** -0.5, s * 20 ** -1.5), rel=1e-3)
    checksums = re.search(r"weight checksums by rank: \[([^\]]+)\]", out).group(1).split(", ")
    assert len(checksums) == 2 and len(set(checksums)) == 1
    step = tf.train.load_variable(str(tmp_path / "run/checkpoints/ckpt-2"), "optimizer/iterations/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(step) == 2 * steps


@pytest.mark.slow
def test_two_ranks_with_the_sampled_output_and_row_gradients_stay_in_sync_and_learn(work, tmp_path):
    """loss.output=sampled with hardware.sparse_as_dense=false at np 2: the tables' gradients travel as rows
    (allgathered), Adam and weight decay update only those rows, both ranks end on the same weights, the
    validation score rises, and the export is an ordinary DAE's (inference scores every item)."""
    proc = train(2, work, tmp_path / "run", *DAE_RUN_SETTINGS, "--set", "loss.output=sampled", "--set",
                 "loss.negatives=64", "--set", "hardware.sparse_as_dense=false", "--set", "train.weight_decay=1.0")
    out = proc.stdout
    assert "embedding gradients sparse allgather" in out
    checksums = re.search(r"weight checksums by rank: \[([^\]]+)\]", out).group(1).split(", ")
    assert len(checksums) == 2 and len(set(checksums)) == 1
    scores = [float(x) for x in re.findall(r"validation music [0-9.]+ tag [0-9.]+ score ([0-9.]+)", out)]
    assert len(scores) == 3 and scores[-1] > scores[0]
    config = json.loads((tmp_path / "run/export/config.json").read_text())
    assert config["trained_with"]["loss"]["output"] == "sampled"


@pytest.mark.slow  # a training subprocess (about 20 s)
def test_the_trainer_starts_the_output_heads_from_popularity_when_asked(work, tmp_path):
    """train.output_init=popularity reaches the model: after one step at the warmup's first learning rate
    (about 1.6e-3 here) the exported song biases are still log(count / playlists) and the untied table's song
    rows still about 0 (the reference's start: biases 0, rows drawn with standard deviation 48^-0.5)."""
    train(None, work, tmp_path / "run", "--set", "train.epochs=1", "--set", "train.steps_per_epoch=1",
          "--set", "train.output_init=popularity", "--set", "model.tied_output=false")
    counts = np.array([c for _, c in json.loads((work / "vocab.json").read_text())["songs"]], dtype=np.float64)
    playlists = json.loads((work / "manifest.json").read_text())["records"]["train"]
    with np.load(tmp_path / "run/export/weights.npz") as weights:
        biases, table = weights["biases/0"], weights["output_table"]
    np.testing.assert_allclose(biases, np.log(counts / playlists), atol=0.01)
    assert np.abs(table[:len(counts)]).max() < 0.01


def test_the_sampled_output_with_the_bce_item_loss_is_refused():
    from hvd_train.config import ConfigError, load_config
    from hvd_train.dae import DEFAULT_CONFIG, check_config

    with pytest.raises(ConfigError, match="loss.output=sampled needs loss.item_loss=softmax"):
        check_config(load_config(DEFAULT_CONFIG, ["loss.output=sampled", "loss.item_loss=bce"]))


def test_fewer_batches_than_accumulation_steps_is_a_clear_error(work, tmp_path):
    proc = train(None, work, tmp_path / "run", "--set", "train.steps_per_epoch=1", "--set", "train.accumulation_steps=2",
                 check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "an epoch holds 1 batches per rank, fewer than train.accumulation_steps=2" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_invalid_config_fails_fast_on_both_ranks(work, tmp_path):
    """One real two-rank case: each rank types the config before hvd.init() and names the bad key."""
    proc = train(2, work, tmp_path / "run", "--set", "train.epochz=3", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]  # hvd_train/common.py fail(), on both ranks
    assert (proc.stdout + proc.stderr).count("no key 'epochz' in section train") == 2


@pytest.mark.parametrize("overrides, size, words", [
    (["model.hidden=abc"], 1, "expected int"),
    (["train.global_batch_size=129"], 2, "train.global_batch_size=129 does not divide over 2 ranks"),
    (["train.output_init=zeros"], 1, "train.output_init must be one of ['random', 'popularity']"),
])
def test_invalid_config_is_one_config_error_naming_it(overrides, size, words):
    """In process, the checks hvd_train.loop.start runs: the typed config, then the per-rank batch."""
    from hvd_train.config import ConfigError, load_config
    from hvd_train.dae import DEFAULT_CONFIG, check_config

    with pytest.raises(ConfigError, match=re.escape(words)):
        check_config(load_config(DEFAULT_CONFIG, overrides)).per_rank_batch(size)


def test_a_config_without_a_section_is_refused_before_horovod_starts(tmp_path):
    """In process: the check that runs before hvd.init() names the missing section."""
    import yaml

    from hvd_train.config import ConfigError, load_config
    from hvd_train.dae import DEFAULT_CONFIG, check_config

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    del config["faults"], config["checkpoint"]
    (tmp_path / "dae.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="no section 'checkpoint', 'faults'"):
        check_config(load_config(tmp_path / "dae.yaml"))


@pytest.mark.slow
def test_more_ranks_than_validation_shards_is_a_clear_error_before_training(work, tiny_split, tiny_data, tmp_path):
    import yaml

    from conftest import mpirun

    records = json.loads((work / "manifest.json").read_text())["records"]
    data_config = yaml.safe_load((REPO / "configs/data.yaml").read_text())
    data_config["shards"] = {"min_shards": 1, "records_per_shard": records["val"]}  # 1 val shard, >= 2 train shards
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data_config))
    mpirun(1, "--split", tiny_split, "--meta", tiny_data, "--out", tmp_path / "work", "--config", tmp_path / "data.yaml")
    shards = json.loads((tmp_path / "work/manifest.json").read_text())["shards"]
    assert len(shards["val"]) == 1 and len(shards["train"]) >= 2
    proc = train(2, tmp_path / "work", tmp_path / "run", "--set", "train.epochs=1", check=False, timeout=180)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "1 val shards cannot feed 2 ranks" in text and "Traceback" not in text
    assert not (tmp_path / "run/checkpoints").exists()


def test_a_missing_workdir_is_refused_naming_it(tmp_path):
    """In process, the check rank 0 runs before training (hvd_train.loop.start)."""
    from data.workdir import WorkdirError, verify_workdir

    with pytest.raises(WorkdirError, match="no manifest.json"):
        verify_workdir(tmp_path / "nothing")


@pytest.mark.slow
def test_a_corrupted_workdir_is_refused_on_two_ranks(work, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(work, broken)
    shard = broken / "shards/train-00003-of-00064.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-5])
    refused = train(2, broken, tmp_path / "run2", check=False, timeout=120)
    assert refused.returncode == 2 and "train-00003-of-00064.tfrecord: sha256 differs" in refused.stdout + refused.stderr


@pytest.mark.slow
def test_resuming_on_another_work_directory_is_refused(dae_run, tiny_data, tmp_path):
    from conftest import mpirun

    shutil.copytree(dae_run[0], tmp_path / "run")  # a finished run on workdirs[0], its checkpoints included
    other = tmp_path / "other_work"
    split = tmp_path / "split"
    from conftest import run_module

    run_module("data.split", tiny_data / "train.json", "--out", split, "--seed", "1")  # other vocabularies
    mpirun(1, "--split", split, "--meta", tiny_data, "--out", other)
    refused = train(1, other, tmp_path / "run", "--set", "train.epochs=4", check=False, timeout=180)
    assert refused.returncode == 2 and "trained on another work directory" in refused.stdout + refused.stderr


def test_steps_per_epoch_is_what_the_fewest_rank_fills_or_the_cap():
    from hvd_train.common import steps_per_epoch
    from hvd_train.config import ConfigError, load_config
    from hvd_train.dae import check_config

    manifest = {"shards": {"train": [{"records": 400, "kept": {"dae": r, "title": r // 10}} for r in (300, 260, 290, 250)]}}
    assert steps_per_epoch(manifest, 1, 100) == 11  # 1,100 records the DAE reads
    assert steps_per_epoch(manifest, 2, 100) == 5  # ranks hold 590 and 510: the smaller fills 5
    assert steps_per_epoch(manifest, 2, 100, cap=3) == 3 and steps_per_epoch(manifest, 2, 100, cap=50) == 5
    assert steps_per_epoch(manifest, 1, 10, stage="title") == 11  # 110 titled records: one pass, no wrap-around
    config = load_config(REPO / "configs/dae.yaml", ["train.steps_per_epoch=0"])
    with pytest.raises(ConfigError, match="train.steps_per_epoch must be positive or null"):
        check_config(config)


def test_the_manifest_counts_what_each_pipeline_keeps(work):
    """Per shard, the records the DAE and the title pipelines read: the counts an epoch's steps come from."""
    from data.pipeline import training_dataset

    shards = json.loads((work / "manifest.json").read_text())["shards"]["train"]
    for mode, stage in (("dae", "dae"), ("title_finetune", "title")):
        read = sum(int(b["id"].shape[0]) for b in training_dataset(work, mode, 0, 1, 0, 256))
        assert read == sum(s["kept"][stage] for s in shards) <= sum(s["records"] for s in shards)
