"""bench.comm and bench.scaling: the FLOP counter on graphs whose count is known, the bytes of real trainer
steps against the variables' sizes and the batches' lookups, the scaling model's formulas on a handmade
entry, and (slow) the whole command against Horovod's own timeline of a two-rank step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from bench.comm import matmul_flops, one_step, sent_per_rank, switches
from bench.scaling import LINKS, batch_for, predict, step_time
from conftest import REPO


def test_matmul_flops_counts_matmuls_batched_matmuls_and_einsums_of_a_traced_graph():
    def f(a, b, c, d):
        return tf.matmul(a, b, transpose_a=True), tf.matmul(c, c, transpose_b=True), tf.einsum("bpd,bpkd->bpk", c, d)

    specs = (tf.TensorSpec([5, 3]), tf.TensorSpec([5, 7]), tf.TensorSpec([2, 4, 6]), tf.TensorSpec([2, 4, 3, 6]))
    graph = tf.function(f).get_concrete_function(*specs).graph
    # [3, 5] x [5, 7]: 2*3*7*5; [2, 4, 6] x [2, 6, 4]: 2*(2*4*4)*6; einsum b2 p4 d6 k3: 2*2*4*6*3
    assert matmul_flops(graph) == 2 * 3 * 7 * 5 + 2 * 2 * 4 * 4 * 6 + 2 * 2 * 4 * 6 * 3


def test_convolutions_and_both_their_gradients_count_the_same_multiplications():
    w = tf.Variable(tf.ones([3, 3, 4, 8]))

    def grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.nn.conv2d(x, w, strides=1, padding="SAME"))
        return tape.gradient(y, [x, w])

    graph = tf.function(grads).get_concrete_function(tf.TensorSpec([2, 6, 5, 4])).graph
    kinds = sorted(op.type for op in graph.get_operations() if op.type.startswith("Conv2D"))
    assert kinds == ["Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput"]
    # each: 2 x (2 x 6 x 5 positions x 8 outputs) x (3 x 3 x 4) multiplications
    assert matmul_flops(graph) == 3 * 2 * (2 * 6 * 5 * 8) * (3 * 3 * 4)


def test_ring_collective_bytes():
    switch = {"allreduce_bytes": 1000, "allgather_bytes": 10}
    assert sent_per_rank(switch, 1) == 0
    assert sent_per_rank(switch, 2) == 1000 + 10
    assert sent_per_rank(switch, 8) == pytest.approx(1750 + 70)


@pytest.mark.slow
def test_word2vec_gradients_are_one_row_per_lookup(workdirs):
    step = one_step("word2vec", workdirs[0])
    from hvd_train import word2vec
    from hvd_train.config import load_config

    config = word2vec.check_config(load_config(REPO / "configs/word2vec.yaml")).model
    tensors = {t["name"]: t for t in step["tensors"]}
    assert tensors["inputs"]["sparse"] and tensors["outputs"]["sparse"]
    examples = step["batch_size"] * config.pairs
    lookups_per_example = {"skipgram": 1, "cbow": config.cbow_window}[config.mode]
    assert tensors["inputs"]["lookups"] == examples * lookups_per_example
    assert tensors["outputs"]["lookups"] == examples * (1 + config.negatives)
    d = config.dim
    assert tensors["outputs"]["rows_bytes"] == examples * (1 + config.negatives) * (d * 4 + 4)
    assert switches(step["tensors"])["rows"]["allreduce_bytes"] == 0


def test_the_scaling_model_on_a_handmade_trainer():
    gib = {"allreduce_bytes": 144_000_000, "allgather_bytes": 0}
    flops = 989.4e12 * 0.4 * 1e-3  # 1 ms at 40% of the float16 peak
    trainer = {"melon": {"flops_per_step": flops, "batch_size": 128, "switches": {"dense": gib}}}
    fractions = {"compute": 0.4, "bandwidth": 0.8}
    one = step_time(trainer, "dense", 1, True, fractions, 8)
    assert one["compute_ms"] == pytest.approx(1.0) and one["comm_ms"] == 0 and one["efficiency"] == 1
    eight = step_time(trainer, "dense", 8, True, fractions, 8)  # NVLink 450 GB/s x 0.8 = 360 GB/s
    assert LINKS["nvlink_GBps"] == 450.0
    assert eight["comm_ms"] == pytest.approx(2 * 7 / 8 * 144e6 / 360e9 * 1e3) == pytest.approx(0.7)
    thirty_two = step_time(trainer, "dense", 32, True, fractions, 8)  # 8 NICs x 50 GB/s x 0.8 = 320 GB/s
    assert thirty_two["comm_ms"] == pytest.approx(0.871875)
    one_nic = step_time(trainer, "dense", 32, True, fractions, 1)  # 50 GB/s x 0.8
    assert one_nic["comm_ms"] == pytest.approx(8 * 0.871875)
    assert thirty_two["efficiency"] == pytest.approx(1 / 1.871875)
    tf32 = step_time(trainer, "dense", 1, False, fractions, 8)
    assert tf32["compute_ms"] == pytest.approx(2.0)  # TF32's peak is half of float16's
    # k accumulated batches: k batches' arithmetic before the same bytes travel once
    accumulated = step_time(trainer, "dense", 32, True, fractions, 8, accumulation=4)
    assert accumulated["compute_ms"] == pytest.approx(4.0) and accumulated["comm_ms"] == thirty_two["comm_ms"]
    assert accumulated["efficiency"] == pytest.approx(4 / 4.871875)


@pytest.mark.slow
def test_the_dae_sends_its_whole_tied_table_at_the_work_s_and_melon_s_sizes(workdirs):
    """In process (Horovod's timeline of the DAE's allreduces: tests/test_hardware_switches.py)."""
    from hvd_train import dae as trainer
    from hvd_train.config import load_config
    from models.dae import DAE

    config = trainer.check_config(load_config(REPO / "configs/dae.yaml")).model
    melon = json.loads((REPO / "bench/results/inference_melon.json").read_text())["vocabulary"]
    steps = {"work": one_step("dae", workdirs[0]), "melon": one_step("dae", workdirs[0], melon)}
    assert steps["melon"]["sizes"] == {**steps["work"]["sizes"], **melon}
    for step in steps.values():
        model = DAE.from_config(config, step["sizes"])
        assert step["switches"]["dense"]["allreduce_bytes"] == 4 * sum(v.shape.num_elements()
                                                                      for v in model.trainable_variables)
        table = next(t for t in step["tensors"] if t["shape"] == model.embedding.shape.as_list())
        assert not table["sparse"]  # tied to the output heads: its gradient is dense
        assert step["switches"]["rows"] == step["switches"]["dense"]  # no gradient of the DAE is rows
        assert step["switches"]["dense_fp16"]["allreduce_bytes"] * 2 == step["switches"]["dense"]["allreduce_bytes"]
        assert step["configured_switch"] == "dense"
    assert steps["melon"]["flops_per_step"] > steps["work"]["flops_per_step"] > 0  # the heads multiply by every item


@pytest.mark.slow
def test_comm_agrees_with_horovods_timeline_of_a_two_rank_word2vec_step(workdirs, tmp_path):
    env = {**os.environ, "MELON_BENCH_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bench.comm", "--work", str(workdirs[0]), "--trainers", "word2vec"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w2v = json.loads((tmp_path / "comm.json").read_text())["trainers"]["word2vec"]
    # both ranks' rows gathered, nothing allreduced; rank 1's batch is another draw of the same shapes
    assert w2v["timeline"]["allreduce_bytes"] == 0 and w2v["timeline"]["collectives"] == 4  # values + indices x 2
    assert w2v["timeline_check"]["allgather_timeline_over_2x_computed"] == 1.0
    # its rows do not grow with the vocabulary; its dense tables do
    assert w2v["melon"]["switches"]["rows"]["allgather_bytes"] == w2v["work"]["switches"]["rows"]["allgather_bytes"]
    assert w2v["melon"]["switches"]["dense"]["allreduce_bytes"] > w2v["work"]["switches"]["dense"]["allreduce_bytes"]

def test_the_batch_a_target_needs_and_memory_bound_trainers_are_left_out():
    row = {"allgather_bytes": 0, "8": {"compute_ms": 1.0, "comm_ms": 1.0}}
    assert batch_for(row, 128, 8, 0.85) == round(128 * 0.85 / 0.15)  # compute must be 5.67 x the comm
    assert batch_for({**row, "allgather_bytes": 10}, 128, 8, 0.85) is None  # the rows grow with the batch too
    step = {"flops_per_step": 1e6, "batch_size": 128,
            "switches": {"dense": {"allreduce_bytes": 10**8, "allgather_bytes": 0}}}
    prediction = predict({"trainers": {"w": {"melon": step}}}, {"compute": 0.4, "bandwidth": 0.8}, 8)
    assert "memory-bound" in prediction["w"]["skipped"]
