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
