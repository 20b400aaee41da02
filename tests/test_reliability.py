"""Reliability under real Horovod ranks and real signals: a dead rank ends the job and the rerun resumes,
a diverging run stops with the last good checkpoint, exports are complete and self-describing, and the
MPI and Gloo controllers train the same weights."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from bench.faults import kill_and_time, rank_pids
from conftest import REPO, wait_for_log
from models.export import read_export

FAST = ["--set", "train.batch_size=64", "--set", "train.warmup_steps=20", "--set", "validation.every_epochs=1",
        "--set", "model.hidden=32", "--set", "model.ffn=64", "--set", "validation.batch_size=128"]


def command(np_: int, work, out, *extra) -> list[str]:
    return ["horovodrun", "-np", str(np_), sys.executable, str(REPO / "hvd_train/dae.py"),
            "--work", str(work), "--out", str(out), *FAST, *map(str, extra)]


def train(np_: int, work, out, *extra, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(np_, work, out, *extra), cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.mark.slow
def test_a_diverging_run_is_stopped_with_the_step_named_and_the_last_good_checkpoint(workdirs, tmp_path):
    out = tmp_path / "run"
    # epoch 1 is 12 steps at np=2; from step 16 on rank 1's loss is NaN
    proc = train(2, workdirs[0], out, "--set", "train.epochs=3", "--set", "faults.nan_loss_from_step=16",
                 "--set", "faults.nan_loss_rank=1", "--set", "train.max_bad_steps=3", check=False)
    log = proc.stdout + proc.stderr
    # every rank returns 3 (hvd_train/loop.py stop_diverged, the exit status hvd_train/driver.py documents)
    # and horovodrun (mpirun) exits with it
    assert proc.returncode == 3, (proc.returncode, log[-2000:])
    assert len(re.findall(r"step 16 \(epoch 2\): non-finite loss or gradients on some rank; skipped on all ranks", log)) == 3
    assert re.search(r"training diverged: 3 steps in a row .* the last at step 16 \(epoch 2\); stopped\. "
                     r"Restored the last good checkpoint .*ckpt-1", log)
    # nothing newer than the last good state was written, and it loads
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith("ckpt-1")
    reader = tf.train.load_checkpoint(str(out / "checkpoints"))
    assert reader.get_tensor("optimizer/iterations/.ATTRIBUTES/VARIABLE_VALUE") == 12
    # the rerun without the fault resumes from it and finishes
    again = train(2, workdirs[0], out, "--set", "train.epochs=3")
    assert "resumed from" in again.stdout and "ckpt-1: epoch 1, step 12" in again.stdout


@pytest.mark.slow
def test_a_run_survives_one_bad_step_and_trains_on(workdirs, tmp_path):
    """One step with a NaN loss on rank 1 (faults.nan_loss_steps=1): skipped on both ranks, and training goes
    on to the end with weights that stay finite and in sync."""
    out = tmp_path / "run"
    proc = train(2, workdirs[0], out, "--set", "train.epochs=2", "--set", "faults.nan_loss_from_step=5",
                 "--set", "faults.nan_loss_steps=1", "--set", "faults.nan_loss_rank=1",
                 "--set", "train.max_bad_steps=3", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert len(re.findall(r"non-finite loss or gradients on some rank; skipped on all ranks", log)) == 1
    assert "step 5 (epoch 1): non-finite" in log and "[dae] epoch 2: loss" in log
    reader = tf.train.load_checkpoint(str(out / "checkpoints"))
    assert reader.get_tensor("optimizer/iterations/.ATTRIBUTES/VARIABLE_VALUE") == 23  # 2 epochs x 12 batches, one skipped
    weights, _ = read_export(out / "export")
    assert all(np.isfinite(w).all() for w in weights.values())
    checks = re.search(r"weight checksums by rank: \[([^\]]+)\]", proc.stdout).group(1).split(", ")
    assert len(checks) == 2 and len(set(checks)) == 1


@pytest.mark.slow
def test_divergence_before_the_first_checkpoint_stops_and_says_none_was_written(workdirs, tmp_path):
    out = tmp_path / "run"
    proc = train(2, workdirs[0], out, "--set", "train.epochs=2", "--set", "faults.nan_loss_from_step=3",
                 "--set", "train.max_bad_steps=2", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 3, log[-3000:]
    assert re.search(r"training diverged: 2 steps in a row .* the last at step 3 \(epoch 1\); stopped\. "
                     r"No checkpoint was written yet", log)
    assert tf.train.latest_checkpoint(str(out / "checkpoints")) is None and not (out / "export").exists()


@pytest.mark.slow
def test_a_stop_file_ends_training_after_the_epoch_in_progress_and_the_rerun_trains_on(workdirs, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "STOP").touch()  # asked before the start: the first epoch is the last, and validated as the last is
    first = train(2, workdirs[0], out, "--set", "train.epochs=3", "--set", "validation.every_epochs=5")
    assert "[dae] stop requested" in first.stdout and "stopping after epoch 1; removed the file" in first.stdout
    assert re.findall(r"\[dae\] epoch (\d+): loss", first.stdout) == ["1"] and not (out / "STOP").exists()
    assert (out / "export/weights.npz").is_file() and "validation music" in first.stdout
    again = train(2, workdirs[0], out, "--set", "train.epochs=3")
    assert "ckpt-1: epoch 1" in again.stdout and re.findall(r"\[dae\] epoch (\d+): loss", again.stdout) == ["2", "3"]


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_quickly_and_the_rerun_resumes(workdirs, tmp_path):
    out, log = tmp_path / "run", tmp_path / "job.log"
    with open(log, "w", encoding="utf-8") as output:
        job = subprocess.Popen(command(2, workdirs[0], out, "--set", "train.epochs=40"), cwd=REPO,
                               stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_log(job, log, r"\[dae\] epoch 1: loss", timeout=600)  # epoch 1 done: its checkpoint ...
        wait_for_log(job, log, r"epoch 2/40: [^\r\n]*\| ([2-9]|1[01])/12 ")  # ... and epoch 2 mid-way
        assert (out / "checkpoints" / "checkpoint").exists()  # at least one epoch is safe on disk
        ranks = rank_pids(out)
        assert len(ranks) == 2, ranks
        exited_after = kill_and_time(job, ranks[-1], 60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    # mpirun exits with the killed rank's status, 128 + SIGKILL (README's drill table, bench/results/faults.json)
    assert job.returncode == 128 + signal.SIGKILL and exited_after < 60, job.returncode
    again = train(2, workdirs[0], out, "--set", "train.epochs=3")
    resumed = re.search(r"resumed from \S+ckpt-(\d+): epoch (\d+)", again.stdout)
    assert resumed and int(resumed.group(2)) >= 1
    assert len(set(re.search(r"weight checksums by rank: \[([^\]]+)\]", again.stdout).group(1).split(", "))) == 1


@pytest.mark.slow
def test_mpi_and_gloo_controllers_train_the_same_weights_and_exports_describe_themselves(workdirs, dae_run, tmp_path):
    """The session's DAE run (conftest.py's dae_run: MPI, the default controller) against the same run under Gloo."""
    from conftest import DAE_RUN_SETTINGS, train_dae

    mpi_out, mpi_log = dae_run
    gloo_out = tmp_path / "gloo"
    gloo_log = train_dae(2, workdirs[0], gloo_out, *DAE_RUN_SETTINGS, gloo=True).stdout
    assert "controller MPI" in mpi_log and "controller Gloo, allreduce over Gloo, 1 ms cycle;" in gloo_log
    mpi, config = read_export(mpi_out / "export")
    gloo, _ = read_export(gloo_out / "export")
    assert mpi.keys() == gloo.keys()
    for name in mpi:
        np.testing.assert_allclose(mpi[name], gloo[name], rtol=1e-4, atol=1e-6, err_msg=name)
    manifest = __import__("json").loads((workdirs[0] / "manifest.json").read_text())
    assert config["vocab_sha256"] == manifest["files"]["vocab.json"]["sha256"]
    assert config["tokenizer_sha256"] == manifest["files"]["title.model"]["sha256"]
    assert config["trained_with"]["train"]["epochs"] == 3 and config["trained_with"]["hardware"]
    assert not list(gloo_out.glob(".export.*"))  # no temporary export left behind
