"""The environment launch/setup.sh builds really runs distributed TensorFlow: two Horovod ranks, under
the MPI and the Gloo controller, allreduce and broadcast over real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

RANK_PROGRAM = r"""
import json, sys
import tensorflow as tf
import horovod.tensorflow as hvd
hvd.init()
total = hvd.allreduce(tf.constant([float(hvd.rank() + 1)]), op=hvd.Sum)
root = hvd.broadcast(tf.constant([float(100 + hvd.rank())]), root_rank=0)
out = {"rank": hvd.rank(), "size": hvd.size(), "sum": float(total[0]), "bcast": float(root[0]),
       "mpi": hvd.mpi_enabled(), "gloo": hvd.gloo_enabled()}
with open(sys.argv[1] + f".{hvd.rank()}", "w") as f:
    json.dump(out, f)
"""


@pytest.mark.slow
@pytest.mark.parametrize("controller", ["--mpi", "--gloo"])
def test_two_horovod_ranks_allreduce(controller, tmp_path):
    horovodrun = shutil.which("horovodrun")
    assert horovodrun, "horovodrun not on PATH: run the tests with `bash launch/test.sh`"
    script = tmp_path / "ranks.py"
    script.write_text(RANK_PROGRAM)
    proc = subprocess.run([horovodrun, "-np", "2", controller, sys.executable, str(script), str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["size"] == 2 for r in ranks)
    assert all(r["sum"] == 3.0 for r in ranks)  # 1 + 2
    assert all(r["bcast"] == 100.0 for r in ranks)  # rank 0's value everywhere
    if controller == "--gloo":
        assert all(r["gloo"] for r in ranks)
    else:
        assert all(r["mpi"] for r in ranks)


@pytest.mark.parametrize("launch, has_gpu, preset, expected", [
    ({"OMPI_COMM_WORLD_SIZE": "2"}, False, {}, {"OMPI_MCA_mpi_yield_when_idle": "1", "HOROVOD_CYCLE_TIME": "5"}),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, False, {"HOROVOD_CYCLE_TIME": "1"}, {"OMPI_MCA_mpi_yield_when_idle": "1"}),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True, {}, {}),  # GPUs: NCCL, steps of a few ms
    ({"OMPI_COMM_WORLD_SIZE": "2", "HOROVOD_ELASTIC": "1"}, False, {}, {}),
    ({"HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1"}, False, {}, {}),  # Gloo: no mpirun
])
def test_cpu_ranks_under_mpirun_yield_and_negotiate_every_5_ms_unless_told_otherwise(monkeypatch, launch, has_gpu,
                                                                                      preset, expected):
    """hvd_train/common.py's polling_defaults: what init_horovod sets before hvd.init() (docs/cpu.md); the
    2-rank runs' logs show it took effect (tests/test_dae_trainer.py, tests/test_reliability.py)."""
    from hvd_train.common import CPU_POLLING, polling_defaults

    for name in ("OMPI_COMM_WORLD_SIZE", "HOROVOD_ELASTIC", "HOROVOD_GLOO_RENDEZVOUS_ADDR", *CPU_POLLING):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**launch, **preset}.items():
        monkeypatch.setenv(name, value)
    assert polling_defaults(has_gpu) == expected
