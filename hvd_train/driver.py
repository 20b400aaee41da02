"""Start the one epoch loop (hvd_train/loop.py ``train_epochs``) for fixed-size or elastic training.

A trainer builds its :class:`~hvd_train.loop.Task` and calls :func:`run`. Fixed size (``horovodrun -np
N``): rank 0 restores the latest checkpoint, the state variables are broadcast from it, and the loop runs
with a :class:`~hvd_train.loop.FixedState`. Elastic (horovodrun's ``--min-np``/``--max-np``/
``--host-discovery-script``; see hvd_train/elastic.py): the same loop runs inside ``hvd.elastic.run`` with
an elastic ``TrainingState``, and after every world change each worker re-shards its task, rescales the
learning rate and traces its step again before the loop continues where the last commit left it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hvd_train.common import elastic_enabled, fail, learning_rate
from hvd_train.config import ConfigError, TrainerConfig
from hvd_train.elastic import TrainingState, roll_back_on_lost_peers
from hvd_train.loop import (FixedState, Task, World, announce, prepare, rank0_outputs, state_variables,
                            train_epochs)


def run(hvd, task: Task, config: TrainerConfig, manifest: dict, workdir: Path, out: Path) -> int:
    """Train ``task`` to the end; returns the exit status (0 done, 2 refused, 3 diverged)."""
    if elastic_enabled():
        return _elastic(hvd, task, config, manifest, workdir, out)
    return _fixed(hvd, task, config, manifest, workdir, out)


def _fixed(hvd, task: Task, config: TrainerConfig, manifest: dict, workdir: Path, out: Path) -> int:
    rank = hvd.rank()
    optimizer, counters, checkpoint, resumed = prepare(hvd, task, config, manifest, workdir, out)
    resumed = hvd.broadcast_object(resumed, root_rank=0, name="resume")
    if resumed and resumed.startswith("ERROR"):
        return fail(resumed[6:], rank)
    # Every rank starts from rank 0's weights, optimizer slots and counters.
    hvd.broadcast_variables(state_variables(task.model, optimizer, counters), root_rank=0)
    world = World(rank, hvd.size(), task)
    if rank == 0:
        world.writer, world.managers = rank0_outputs(checkpoint, config, out)
        announce(hvd, task, config, out, optimizer, counters, resumed)
    state = FixedState(epoch=int(counters.epoch_done.numpy()) + 1)
    return train_epochs(hvd, world, config, out, optimizer, counters, checkpoint, state)


def _elastic(hvd, task: Task, config: TrainerConfig, manifest: dict, workdir: Path, out: Path) -> int:
    """The loop under ``hvd.elastic.run``; no collective call before it (hvd_train/elastic.py)."""
    tag = f"[{task.name}]"
    if task.reshard is None:
        return fail(f"{task.name}: this trainer cannot re-shard its data, so it cannot train elastically", hvd.rank())
    # Rank 0 restores the latest checkpoint (no collective call); its verdict and the restored values reach
    # every worker with the state's first sync, inside hvd.elastic.run.
    optimizer, counters, checkpoint, resumed = prepare(hvd, task, config, manifest, workdir, out)
    problem = resumed[6:] if resumed and resumed.startswith("ERROR") else None
    state = TrainingState(hvd, state_variables(task.model, optimizer, counters),
                          epoch=int(counters.epoch_done.numpy()) + 1, batch=0, steps=task.steps, size=hvd.size(),
                          sums={}, good=0, problem=problem, resumed=None if problem else resumed, announced=False)
    world = World(hvd.rank(), hvd.size(), task)  # the trainer built its task for the world it started in
    state.register_reset_callbacks([world.traced.clear])  # graphs traced before a reset must not run after it

    def adopt(rank: int, size: int) -> str | None:
        """Re-shard for (rank, size); a problem that stops every worker (they all see the same size)."""
        shards = len(manifest["shards"]["train"])
        if shards < size:
            return f"{workdir}: {shards} training shards for {size} ranks (elastic training needs one per worker)"
        try:
            config.per_rank_batch(size)
        except ConfigError as e:
            return f"{e} (elastic training: give train.batch_size, or a global batch every world size divides)"
        world.task = dataclasses.replace(task, **task.reshard(rank, size))
        world.rank, world.size = rank, size
        world.traced.clear()
        return None

    @hvd.elastic.run
    @roll_back_on_lost_peers
    def train(state) -> int:
        rank, size = hvd.rank(), hvd.size()
        if state.problem:
            return fail(state.problem, rank)
        if (rank, size) != (world.rank, world.size):
            problem = adopt(rank, size)
            if problem:
                return fail(problem, rank)
        if rank == 0 and world.writer is None:  # rank 0 at the start, or a worker that became rank 0 since
            world.writer, world.managers = rank0_outputs(checkpoint, config, out)
        if rank == 0 and not state.announced:
            announce(hvd, world.task, config, out, optimizer, counters, state.resumed)
            print(f"{tag} elastic: state committed every {config.elastic.commit_every_steps} steps and at every "
                  f"epoch end; the world may change at any commit", flush=True)
            state.announced = True
        if state.size != size:  # the world changed since the last commit
            _continue_epoch(state, world.task, config, optimizer, size, tag, rank)
        return train_epochs(hvd, world, config, out, optimizer, counters, checkpoint, state)

    return train(state)


def _continue_epoch(state, task: Task, config: TrainerConfig, optimizer, size: int, tag: str, rank: int) -> None:
    """After a world change: k of n steps done at the old size become round(k x n' / n) of n' at the new one."""
    done = min(task.steps, round(state.batch * task.steps / state.steps))
    done -= done % config.train.accumulation_steps  # commits fall between updates, never inside an accumulation
    if rank == 0:
        old_scale, scale, step = config.lr_scale(state.size), config.lr_scale(size), int(optimizer.iterations.numpy())
        now = float(learning_rate(step + 1, task.hidden, config.train.warmup_steps, scale))
        print(f"{tag} world changed: {state.size} -> {size} ranks at step {step} (epoch {state.epoch}, "
              f"{state.batch} of {state.steps} steps done, now {done} of {task.steps}); global batch "
              f"{task.batch_size * size} ({task.batch_size} x {size} ranks); learning-rate scale {old_scale:g} -> "
              f"{scale:g} ({config.train.lr_scaling} scaling), learning rate {now:.6e} at step {step + 1}", flush=True)
    state.batch, state.steps, state.size = done, task.steps, size
