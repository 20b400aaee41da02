"""Each hardware switch of the trainers' configs (the ``hardware`` section of configs/dae.yaml and
configs/title.yaml) has its effect, one switch at a time:

* ``mixed_precision``: the encoder's matmuls run in float16 while the output heads, logits and loss stay
  float32, and the step's dynamic loss scale halves on a float16 overflow and grows after good steps;
* ``xla``: the step's forward and backward pass is one function XLA must compile, and it is compiled;
* ``gradient_compression: fp16``: every gradient travels as float16 between two real ranks (Horovod's
  timeline records the dtype of each allreduce);
* ``sparse_as_dense: false``: the title model's piece-table gradient travels as two allgathers (touched rows
  and their indices) instead of an allreduce of the whole table.

The first two need no second rank: they run the trainers' own step (``hvd_train.loop.trace_step``) in this
process with ``hvd_train.one_rank.OneRank`` in place of Horovod. The last two start ``horovodrun -np 2``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bench.comm import gradient_collectives, timeline
from conftest import REPO, load
from hvd_train.config import load_config
from hvd_train import dae
from hvd_train.dae import check_config
from hvd_train.loop import Task, prepare, trace_step
from hvd_train.one_rank import OneRank
from models.dae import DAE

DAE_CONFIG = REPO / "configs/dae.yaml"
SMALL = ["train.batch_size=64", "model.hidden=32", "model.ffn=64"]  # the tiny model the horovodrun tests train too
FAST = ["--set", "train.batch_size=64", "--set", "train.warmup_steps=20", "--set", "model.hidden=32",
        "--set", "model.ffn=64", "--set", "validation.batch_size=128", "--set", "train.epochs=1",
        "--set", "train.steps_per_epoch=1"]
MATMULS = ("MatMul", "BatchMatMulV2")


# ------------------------------------------------------------------ in process: the trainer's step at one rank
def dae_config(overrides: list[str]):
    """configs/dae.yaml with the tiny model and ``overrides``, typed as the DAE trainer types it."""
    return check_config(load_config(DAE_CONFIG, SMALL + overrides))


def dae_task(work: Path, config) -> tuple[Task, dict]:
    """The DAE trainer's own task (hvd_train/dae.py's ``dae_task``) at one rank."""
    manifest = load(work / "manifest.json")
    return dae.dae_task(OneRank(), config, manifest, work), manifest


def traced_step(work: Path, out: Path, overrides: list[str]):
    """(the trainer's traced :class:`~hvd_train.loop.Step`, its task, optimizer, counters) for configs/dae.yaml
    with ``overrides``."""
    config = dae_config(overrides)
    task, manifest = dae_task(work, config)
    hvd = OneRank()
    optimizer, counters, _, resumed = prepare(hvd, task, config, manifest, work, out)
    assert resumed is None
    step = trace_step(hvd, task, config, optimizer, counters, config.lr_scale(1), 1)
    return step, task, optimizer, counters


def matmul_dtypes(graph) -> list[tf.DType]:
    return [op.get_attr("T") for op in graph.get_operations() if op.type in MATMULS]


@pytest.mark.parametrize("mixed", [True, False])
def test_mixed_precision_runs_the_encoder_matmuls_in_float16_and_keeps_the_heads_and_loss_in_float32(workdirs, mixed):
    config = dae_config([f"hardware.mixed_precision={str(mixed).lower()}"])
    task, _ = dae_task(workdirs[0], config)
    loss = tf.function(lambda batch: task.loss(batch, 1))
    graph = loss.get_concrete_function(task.batches(1).element_spec).graph
    dtypes = matmul_dtypes(graph)
    blocks = config.model.blocks
    # per block: query, key, value, output, ffn in, ffn out (MatMul) and the two attention products
    # (BatchMatMulV2); then one MatMul per output head (songs, tags, artists)
    assert len(dtypes) == 8 * blocks + 3, dtypes
    assert dtypes.count(tf.float16) == (8 * blocks if mixed else 0), dtypes
    assert dtypes.count(tf.float32) == (3 if mixed else 8 * blocks + 3), dtypes
    batch = next(iter(task.batches(1)))
    total, parts = task.loss(batch, 1)
    assert total.dtype == tf.float32 and all(p.dtype == tf.float32 for p in parts.values())
    assert np.isfinite(total.numpy())
    logits = task.model(batch["songs_in"], batch["tags_in"], batch["artists_in"], batch["title_in"])
    assert [x.dtype for x in logits] == [tf.float32] * 3


def test_mixed_precision_loss_scale_halves_on_a_float16_overflow_and_grows_after_good_steps(workdirs, tmp_path):
    """A loss scale of 2^32 overflows float16 in the encoder's backward pass (the loss itself stays finite):
    those steps are skipped and the scale halves each time until it fits; then it doubles after
    ``loss_scale_growth_steps`` good steps in a row."""
    growth = 3
    step, task, optimizer, counters = traced_step(workdirs[0], tmp_path / "run", [
        "hardware.mixed_precision=true", f"hardware.loss_scale_initial={2 ** 32}",
        f"hardware.loss_scale_growth_steps={growth}"])
    scale = float(counters.loss_scale.numpy())
    assert scale == 2.0 ** 32
    history, good_in_a_row = [], 0
    for batch in task.batches(1).take(40):
        loss, _, _, skipped = step.run(batch)
        assert np.isfinite(float(loss))  # only the scaled float16 gradients overflow
        after = float(counters.loss_scale.numpy())
        if bool(skipped):
            assert after == max(scale / 2, 1.0), (scale, after)
            good_in_a_row = 0
        else:
            good_in_a_row += 1
            assert after == (scale * 2 if good_in_a_row == growth else scale), (good_in_a_row, scale, after)
            good_in_a_row %= growth
        history.append((bool(skipped), after))
        scale = after
    skipped_steps = [s for s, _ in history]
    assert skipped_steps[0], "a loss scale of 2^32 did not overflow float16: is the backward pass float32?"
    assert skipped_steps.count(False) >= growth, history  # the scale came down to one that fits ...
    assert any(b > a for (_, a), (_, b) in zip(history, history[1:])), history  # ... and grew again
    assert int(optimizer.iterations.numpy()) == skipped_steps.count(False)


def test_without_mixed_precision_there_is_no_loss_scale(workdirs, tmp_path):
    """The same huge initial scale is ignored when mixed precision is off: scale 1, no step skipped."""
    step, task, optimizer, counters = traced_step(workdirs[0], tmp_path / "run", [
        "hardware.mixed_precision=false", f"hardware.loss_scale_initial={2 ** 32}", "hardware.loss_scale_growth_steps=1"])
    for batch in task.batches(1).take(3):
        loss, _, _, skipped = step.run(batch)
        assert not bool(skipped) and float(counters.loss_scale.numpy()) == 1.0
    assert int(optimizer.iterations.numpy()) == 3
    assert not any(d == tf.float16 for d in matmul_dtypes(step.run.get_concrete_function().graph))


def test_accumulation_sums_k_batches_gradients_locally_and_updates_once_with_their_mean(workdirs, tmp_path):
    """``train.accumulation_steps=2``: each batch only adds its gradients to the rank's sums (no update); the
    second batch's ``apply`` makes one update from their mean and zeroes the sums. Without dropout the sums
    equal the two batches' gradients taken by a tape of their own."""
    step, task, optimizer, _ = traced_step(workdirs[0], tmp_path / "run", ["train.accumulation_steps=2",
                                                                           "model.dropout=0.0"])
    assert step.run is None
    first, second = list(task.batches(1).take(2))
    expected = []
    for batch in (first, second):
        with tf.GradientTape() as tape:
            loss, _ = task.loss(batch, 1)
        expected.append([tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, task.variables)])
    before = [v.numpy().copy() for v in task.variables]
    for batch in (first, second):
        step.accumulate(batch)
        assert int(optimizer.iterations.numpy()) == 0
        assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, task.variables))  # nothing applied yet
    accumulated = [g.numpy() for g in step.sums]
    for got, a, b in zip(accumulated, *expected):
        np.testing.assert_allclose(got, a + b, rtol=1e-4, atol=1e-6)
    lr, skipped = step.apply()
    assert not bool(skipped) and int(optimizer.iterations.numpy()) == 1
    assert all(not np.any(g.numpy()) for g in step.sums)  # zeroed for the next step
    moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, task.variables)]
    assert sum(moved) >= len(moved) - 1, moved  # every trained variable moved (the title table may not)


# ------------------------------------------------------------------ in process: XLA
def must_compile(graph) -> list:
    """The call ops of ``graph`` whose function XLA must compile (tf.function(jit_compile=True))."""
    out = []
    for op in graph.get_operations():
        try:
            if op.get_attr("_XlaMustCompile"):
                out.append(op)
        except ValueError:
            pass
    return out


@pytest.mark.parametrize("xla", [True, False])
def test_xla_compiles_the_step_s_forward_and_backward_pass(workdirs, tmp_path, xla):
    step, task, optimizer, _ = traced_step(workdirs[0], tmp_path / "run", [f"hardware.xla={str(xla).lower()}"])
    graph = step.run.get_concrete_function().graph
    compiled = must_compile(graph)
    if xla:
        # one call XLA must compile, holding every matmul of the forward and backward pass (none is left
        # outside it); the allreduces and the optimizer stay outside
        assert len(compiled) == 1
        assert not matmul_dtypes(graph)
        name = compiled[0].get_attr("f").name
        (inner,) = [f for f in graph.as_graph_def().library.function if f.signature.name == name]
        assert sum(node.op in MATMULS for node in inner.node_def) >= 3 * 11  # 11 forward matmuls, 2 gradients each
    else:
        assert not compiled and len(matmul_dtypes(graph)) >= 3 * 11
    batch = next(iter(task.batches(1)))
    loss, _, _, skipped = step.run(batch)  # a must-compile function runs only compiled: XLA compiled it on this CPU
    assert np.isfinite(float(loss)) and not bool(skipped) and int(optimizer.iterations.numpy()) == 1


# ------------------------------------------------------------------ horovodrun -np 2: Horovod's timeline
def horovodrun(trainer: list[str], work: Path, out: Path, *extra: str) -> tuple[dict[str, dict], str]:
    """One training step on each of 2 ranks with Horovod's timeline on: (the timeline, rank 0's output)."""
    path = out.parent / f"{out.name}.timeline.json"
    cmd = ["horovodrun", "-np", "2", sys.executable, *trainer, "--work", str(work), "--out", str(out), *FAST, *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HOROVOD_TIMELINE": str(path)})
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return timeline(path), proc.stdout


@pytest.mark.slow
def test_fp16_compression_sends_every_gradient_as_float16(workdirs, tmp_path):
    tensors, log = horovodrun([str(REPO / "hvd_train/dae.py")], workdirs[0], tmp_path / "run",
                              "--set", "hardware.gradient_compression=fp16")
    assert "gradient compression fp16" in log
    model = DAE.from_config(dae_config([]).model, load(workdirs[0] / "manifest.json")["sizes"])
    grads = gradient_collectives(tensors)
    # one allreduce per trained variable, of its shape, and every one in float16
    assert sorted(s for t in grads.values() for _, s in t["results"]) == sorted(
        tuple(v.shape) for v in model.trainable_variables)
    assert all(t["ops"] == {"ALLREDUCE"} for t in grads.values()), grads
    assert {d for t in grads.values() for d, _ in t["results"]} == {"float16"}, grads
    # what is not a gradient stays float32: the step's "bad on some rank" vote
    assert tensors["bad_step"]["results"] == {("float32", ())}


@pytest.mark.slow
def test_sparse_embedding_gradients_are_allgathered_rows_instead_of_the_allreduced_table(workdirs, tmp_path):
    """The title model's piece table is only gathered from (models/title.py): with sparse_as_dense false its
    gradient travels as the looked-up rows and their indices (two allgathers), not as the whole table."""
    from data.title import TitleTokenizer
    from hvd_train import title
    from models.title import TitleBERT

    tensors, log = horovodrun([str(REPO / "hvd_train/title.py"), "finetune"], workdirs[0], tmp_path / "run",
                              "--set", "hardware.sparse_as_dense=false")
    assert "embedding gradients sparse allgather" in log
    config = title.check_config(load_config(REPO / "configs/title.yaml", SMALL))
    model = TitleBERT.from_config(config.model, load(workdirs[0] / "manifest.json")["sizes"],
                                  TitleTokenizer(workdirs[0] / "title.model"))
    trained = [v for v in model.trainable_variables if not v.name.startswith("piece_bias")]  # as hvd_train/title.py
    hidden, length = config.model.hidden, config.model.max_length
    grads = gradient_collectives(tensors)
    gathered = {r for t in grads.values() if t["ops"] == {"ALLGATHER"} for r in t["results"]}
    # the piece rows both ranks looked up (one per token, at most 64 titles x max_length each) and their indices
    values = {s for d, s in gathered if d == "float32"}
    assert len(values) == 1, f"expected the piece rows of one step allgathered, got {gathered}"
    (rows,) = values
    assert rows[1] == hidden and rows[0] <= 2 * 64 * length, rows
    assert gathered == {("float32", rows), ("int32", rows[:1])}, gathered
    # every other gradient is allreduced whole, the piece table's never
    reduced = sorted(s for t in grads.values() if t["ops"] == {"ALLREDUCE"} for _, s in t["results"])
    assert reduced == sorted(tuple(v.shape) for v in trained if v is not model.pieces), reduced
