"""Elastic Horovod training: the trainers keep running while workers leave and join.

Launch any trainer with horovodrun's elastic options and a host-discovery script; nothing else changes::

    horovodrun -np 2 --min-np 1 --max-np 2 --host-discovery-script launch/elastic/discover_hosts.sh \
        python hvd_train/dae.py --work WORKDIR --out RUNDIR

horovodrun then runs the workers over Gloo and sets ``HOROVOD_ELASTIC=1`` in their environment, which is
how :func:`hvd_train.loop.run` knows to hand over to :func:`run` here. The shape is Horovod's TF2 recipe
(``hvd.elastic.run`` around the training function, a state object holding model, optimizer and counters,
``state.commit()`` every K steps, reset callbacks):

* the state (:class:`TrainingState`) holds the model's variables, the Adam slots and step, the loop's
  counters (epoch, best score and epoch, loss scale), and as Python values the epoch in progress, the
  steps done in it, the world size they were done at and the epoch's loss sums;
* ``state.commit()`` every ``elastic.commit_every_steps`` steps (configs/*.yaml) and at the end of each
  epoch copies it to host memory and asks the driver whether hosts changed; when they did, every worker
  stops at that commit (Horovod raises ``HostsUpdatedInterrupt`` on all of them), Horovod is shut down and
  initialised again with the new world, and the state is broadcast from rank 0 to every worker, new ones
  included. A worker that dies mid-step makes the others roll back to the last commit instead;
* after a world change each worker re-shards: the training files are dealt again for its new rank and
  size (data/pipeline.py), steps per epoch and the per-rank batch are recomputed, so is the validation
  share; the learning rate is scaled for the new size (``lr_scale(train, hvd.size())``) and the
  training step traced again. The epoch in progress continues where it was, as a fraction: k of n steps
  done at the old size become round(k x n' / n) of n' at the new size, taken from the new shards (so in
  that one epoch some playlists may be seen twice and others not at all). Rank 0 prints a line naming the
  old and new size, the step, and the new global batch and learning-rate scale;
* as in the fixed-size loop, rank 0 alone writes checkpoints, the export and TensorBoard (whichever worker
  is rank 0 at the time), and running the same command again after the whole job stopped resumes from the
  latest checkpoint.

Why not ``hvd.elastic.TensorFlowState`` itself (Horovod 0.28.1): its constructor broadcasts the variables,
a collective outside ``hvd.elastic.run`` that a worker joining later would wait on forever, and in eager
mode its ``sync()`` broadcasts no variables at all (only with a TF1 session), so a new worker would keep
its own initial weights. :class:`TrainingState` is the same ``ObjectState`` with those two points fixed.

Two more rules this module follows, both learnt the hard way: no collective call before ``hvd.elastic.run``
(the work directory check and the checkpoint verdict reach the workers through the state instead), and
every tf.function holding Horovod ops is traced again after a reset (a graph traced before a reset hangs
or runs alone).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path

DEFAULT_COMMIT_EVERY_STEPS = 50


def enabled() -> bool:
    """True in a worker started by horovodrun in elastic mode (it sets HOROVOD_ELASTIC=1)."""
    return os.environ.get("HOROVOD_ELASTIC", "0") == "1"


def commit_every(config: dict) -> int:
    """``elastic.commit_every_steps`` of the config (the default when the config has no elastic section)."""
    return int((config.get("elastic") or {}).get("commit_every_steps", DEFAULT_COMMIT_EVERY_STEPS))


def _object_state():
    from horovod.common.elastic import ObjectState

    return ObjectState


class TrainingState(_object_state()):
    """``hvd.elastic.TensorFlowState`` for eager TF2: tf.Variables plus Python values, saved to host memory on
    ``commit()``, restored after a failure, broadcast from rank 0 on ``sync()``.

    Unlike Horovod's class it does no collective call when built, and ``sync()`` broadcasts the variables
    (eagerly, one named broadcast each). Python values are deep-copied on save and restore, so changing a
    dict in place between commits never alters the committed copy.
    """

    def __init__(self, hvd, variables: list, **values):
        self.variables = list(variables)
        self._hvd = hvd
        self._save_variables()
        super().__init__(bcast_object=lambda obj: hvd.broadcast_object(obj, root_rank=0, name="elastic_state"),
                         get_rank=hvd.rank, **values)

    def save(self):
        self._save_variables()
        super().save()
        self._saved_state = copy.deepcopy(self._saved_state)

    def restore(self):
        for variable, value in zip(self.variables, self._values):
            variable.assign(value)
        super().restore()
        for name in self._saved_state:
            setattr(self, name, copy.deepcopy(self._saved_state[name]))

    def sync(self):
        for i, variable in enumerate(self.variables):
            variable.assign(self._hvd.broadcast(variable, root_rank=0, name=f"elastic_state.{i}"))
        self._save_variables()
        super().sync()
        self._saved_state = copy.deepcopy(self._saved_state)

    def _save_variables(self):
        self._values = [variable.numpy() for variable in self.variables]


@dataclasses.dataclass
class _World:
    """What this process trains with at its current rank and size (rebuilt after every world change)."""
    rank: int | None = None
    size: int | None = None
    task: object = None
    traced: dict = dataclasses.field(default_factory=dict)
    writer: object = None
    managers: object = None


def run(hvd, task, config: dict, manifest: dict, workdir: Path, out: Path) -> int:
    """The training loop of hvd_train/loop.py under ``hvd.elastic.run``; returns the exit status."""
    import tensorflow as tf
    from tqdm import tqdm

    from hvd_train.common import ConfigError, average, fail, learning_rate, lr_scale, per_rank_batch
    from hvd_train.loop import _stop_diverged, announce, finish, finish_epoch, prepare, rank0_outputs, trace_step

    tag = f"[{task.name}]"
    train_cfg = config["train"]
    epochs, max_bad, every_k = int(train_cfg["epochs"]), int(train_cfg["max_bad_steps"]), commit_every(config)
    warmup = int(train_cfg["warmup_steps"])
    mixed = bool(config["hardware"]["mixed_precision"])
    if task.reshard is None:
        return fail(f"{task.name}: this trainer cannot re-shard its data, so it cannot train elastically", hvd.rank())
    # Rank 0 restores the latest checkpoint (no collective call); its verdict and the restored values reach
    # every worker with the state's first sync, inside hvd.elastic.run.
    optimizer, counters, checkpoint, resumed = prepare(hvd, task, config, manifest, workdir, out)
    problem = resumed[6:] if resumed and resumed.startswith("ERROR") else None
    variables = list(task.model.variables) + [optimizer.iterations] + optimizer.m + optimizer.v + list(counters)
    state = TrainingState(hvd, variables, epoch=int(counters.epoch_done.numpy()) + 1, batch=0, steps=task.steps,
                          size=hvd.size(), sums={}, good=0, problem=problem, resumed=None if problem else resumed,
                          announced=False)
    world = _World(hvd.rank(), hvd.size(), task)  # the trainer built its task for the world it started in

    def on_reset():  # Horovod was shut down and initialised again for another set of workers
        world.traced.clear()  # graphs traced before the reset must not run after it

    state.register_reset_callbacks([on_reset])

    def adopt(rank: int, size: int) -> str | None:
        """Re-shard for (rank, size); a problem that stops every worker (they all see the same size)."""
        shards = len(manifest["shards"]["train"])
        if shards < size:
            return f"{workdir}: {shards} training shards for {size} ranks (elastic training needs one per worker)"
        try:
            per_rank_batch(train_cfg, size)
        except ConfigError as e:
            return f"{e} (elastic training: give train.batch_size, or a global batch every world size divides)"
        world.task = dataclasses.replace(task, **task.reshard(rank, size))
        world.rank, world.size = rank, size
        world.traced.clear()
        return None

    @hvd.elastic.run
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
        t = world.task
        scale = lr_scale(train_cfg, size)
        if rank == 0 and not state.announced:
            announce(hvd, t, config, out, optimizer, counters, state.resumed)
            print(f"{tag} elastic: state committed every {every_k} steps and at every epoch end; the world may "
                  f"change at any commit", flush=True)
            state.announced = True
        if state.size != size:  # the world changed since the last commit
            done = min(t.steps, round(state.batch * t.steps / state.steps))
            if rank == 0:
                old_scale, step = lr_scale(train_cfg, state.size), int(optimizer.iterations.numpy())
                now = float(learning_rate(step + 1, t.hidden, warmup, scale))
                print(f"{tag} world changed: {state.size} -> {size} ranks at step {step} (epoch {state.epoch}, "
                      f"{state.batch} of {state.steps} steps done, now {done} of {t.steps}); global batch "
                      f"{t.batch_size * size} ({t.batch_size} x {size} ranks); learning-rate scale {old_scale:g} -> "
                      f"{scale:g} ({train_cfg['lr_scaling']} scaling), learning rate {now:.6e} at step {step + 1}",
                      flush=True)
            state.batch, state.steps, state.size = done, t.steps, size
        bad_in_a_row, since_commit = 0, 0
        lr = learning_rate(optimizer.iterations + 1, t.hidden, warmup, scale)
        for epoch in range(state.epoch, epochs + 1):
            key = t.loss_variants(epoch)
            if key not in world.traced:
                world.traced[key] = trace_step(hvd, t, config, optimizer, counters, scale, epoch)
            seen, started = 0, time.perf_counter()
            progress = tqdm(total=t.steps, initial=state.batch, desc=f"epoch {epoch}/{epochs}", disable=rank != 0,
                            unit="step", leave=False)
            for batch in t.batches(epoch).skip(state.batch):
                loss, parts, lr, skipped = world.traced[key](batch)
                seen += int(tf.shape(next(iter(batch.values())))[0])
                state.batch += 1
                if bool(skipped):  # the same on every rank
                    bad_in_a_row += 1
                    if rank == 0:
                        print(f"{tag} step {int(optimizer.iterations.numpy()) + 1} (epoch {epoch}): non-finite loss "
                              f"or gradients on some rank; skipped on all ranks ({bad_in_a_row} in a row)"
                              + (f", loss scale now {float(counters.loss_scale.numpy()):g}" if mixed else ""),
                              flush=True)
                    if bad_in_a_row >= max_bad and (not mixed or float(counters.loss_scale.numpy()) <= 1.0):
                        progress.close()
                        return _stop_diverged(hvd, tag, checkpoint, out, bad_in_a_row,
                                              int(optimizer.iterations.numpy()) + 1, epoch)
                else:
                    bad_in_a_row = 0
                    state.good += 1
                    for name, value in {"loss": loss, **parts}.items():
                        state.sums[name] = state.sums.get(name, 0.0) + float(value)
                    progress.set_postfix(loss=f"{float(loss):.4f}")
                progress.update(1)
                since_commit += 1
                if since_commit >= every_k:
                    since_commit = 0
                    state.commit()  # raises HostsUpdatedInterrupt on every worker when the hosts changed
            progress.close()
            metrics = average(hvd, {k: v / max(1, state.good) for k, v in state.sums.items()})
            throughput = seen * size / max(time.perf_counter() - started, 1e-9)
            stop = finish_epoch(hvd, t, config, out, counters, world.writer, world.managers, epoch, metrics, lr,
                                throughput)
            state.epoch, state.batch, state.sums, state.good = (epochs + 1 if stop else epoch + 1), 0, {}, 0
            since_commit = 0
            state.commit()
            if stop:
                break
        return finish(hvd, t, counters, out)

    return train(state)
