"""hvd_train/elastic.py's TrainingState in process, on one Horovod rank (no horovodrun): what a commit saves
is what a restore brings back, variables and Python values alike; values changed in place after a commit never
alter the committed copy; sync() hands out rank 0's last commit and commits it. The multi-rank behaviour (workers
leaving and joining) is tests/test_elastic.py's, under horovodrun."""

from __future__ import annotations

import subprocess

import numpy as np


def _state(hvd_one_rank):
    import tensorflow as tf

    from hvd_train.elastic import TrainingState

    weights = tf.Variable([1.0, 2.0, 3.0])
    step = tf.Variable(7, dtype=tf.int64)
    state = TrainingState(hvd_one_rank, [weights, step], epoch=2, batch=5, sums={"loss": [1.0]}, good=0)
    return state, weights, step


def test_a_restore_brings_back_the_last_commit_of_variables_and_values(hvd_one_rank):
    state, weights, step = _state(hvd_one_rank)
    state.save()  # what commit() does before it checks for host changes
    weights.assign([9.0, 9.0, 9.0])
    step.assign(99)
    state.epoch, state.batch = 3, 0
    state.sums["loss"].append(5.0)  # in place, after the commit
    state.restore()
    np.testing.assert_array_equal(weights.numpy(), [1.0, 2.0, 3.0])
    assert int(step.numpy()) == 7 and (state.epoch, state.batch) == (2, 5)
    assert state.sums == {"loss": [1.0]}


def test_a_value_changed_in_place_after_a_restore_does_not_reach_the_committed_copy(hvd_one_rank):
    state, weights, _ = _state(hvd_one_rank)
    state.save()
    state.restore()
    state.sums["loss"].append(2.0)  # the restored dict must be a copy of the committed one
    weights.assign_add([1.0, 1.0, 1.0])
    state.restore()
    assert state.sums == {"loss": [1.0]}
    np.testing.assert_array_equal(weights.numpy(), [1.0, 2.0, 3.0])


def test_sync_hands_out_rank_0s_last_commit_and_commits_it(hvd_one_rank):
    """Horovod calls sync() after a reset, when every worker holds its last commit (restored after a failure,
    or just committed when hosts changed): the workers then take rank 0's."""
    state, weights, step = _state(hvd_one_rank)
    weights.assign([4.0, 5.0, 6.0])
    state.batch = 8
    state.save()
    state.sync()  # broadcast from rank 0 (this rank), then saved again
    weights.assign([0.0, 0.0, 0.0])
    state.batch = 0
    state.restore()
    np.testing.assert_array_equal(weights.numpy(), [4.0, 5.0, 6.0])
    assert state.batch == 8 and int(step.numpy()) == 7


def test_elastic_training_of_a_task_that_cannot_reshard_is_refused_before_any_collective(hvd_one_rank, monkeypatch,
                                                                                         capsys, tmp_path):
    """hvd_train/driver.py: a trainer without ``reshard`` cannot deal its data again after a world change, so
    an elastic launch is refused with exit 2 and a line that says why (nothing trained, nothing written)."""
    from hvd_train import driver
    from hvd_train.loop import Task

    task = Task(name="toy", model=None, variables=[], loss=None, batches=None, steps=1, batch_size=1, hidden=8,
                validate=None, export=None, reshard=None)
    monkeypatch.setenv("HOROVOD_ELASTIC", "1")
    assert driver.run(hvd_one_rank, task, config=None, manifest={}, workdir=tmp_path, out=tmp_path / "run") == 2
    assert "toy: this trainer cannot re-shard its data, so it cannot train elastically" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_one_rank_world_leaves_no_mpi_variables_to_later_subprocesses(hvd_one_rank):
    """conftest.hvd_one_rank: an mpirun or horovodrun that a later test starts must not join the singleton."""
    inherited = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert not [line for line in inherited if line.startswith(("PMIX_", "OMPI_MCA_ess", "OMPI_MCA_orte"))]
