"""The Horovod training loop every trainer runs; a trainer only says what is specific to its model.

A trainer builds a :class:`Task` (model, variables, loss, one epoch of this rank's batches, validation,
export description) and calls hvd_train/driver.py ``run``, which does the rest the same way for every
model:

* resume: rank 0 restores the latest checkpoint of RUNDIR (refusing one trained on another work
  directory), then model, optimizer state and counters are broadcast from rank 0 before the first step;
* steps: each rank's gradients, then one allreduce per gradient averages them (optionally fp16-compressed,
  embedding gradients dense or sparse; the same path with XLA and with accumulation); a task with
  ``row_updates`` (the DAE's sampled output with ``hardware.sparse_as_dense: false``) keeps its tables'
  gradients rows end to end: merged per rank, allgathered, and Adam and weight decay update only those rows;
  the learning rate follows the warmup schedule scaled by the number of ranks, every rank runs the same
  number of steps; optional XLA and mixed precision with dynamic loss scaling; with
  ``train.accumulation_steps`` k > 1 a step is k batches: each rank sums their gradients locally and
  allreduces the mean once (:class:`Step`);
* divergence: a step whose loss or gradients are not finite on any rank is skipped by every rank (one
  allreduce decides); ``train.max_bad_steps`` of them in a row stop training with the step named, and the
  weights of the last checkpoint restored;
* epochs: metrics averaged over ranks; validation every E epochs with early stopping decided once and
  broadcast, so all ranks stop together;
* rank 0 alone: progress bar, TensorBoard, checkpoints (last K and best), the inference export;
* stopping early on purpose: ``train.max_minutes`` (a time budget), or a file ``OUT/STOP`` (``touch`` it:
  training ends after the epoch in progress, as after its last);
* the end: every rank's weight checksum is compared.

The same epoch loop (:func:`train_epochs`) runs fixed-size and elastic training: it reads and advances a
*state* (the epoch in progress, the steps done in it, its loss sums) and calls ``state.commit()`` every
``elastic.commit_every_steps`` steps and at every epoch end. In fixed-size training that state is a
:class:`FixedState`, whose commit does nothing; in elastic training it is hvd_train/elastic.py's
``TrainingState``, whose commit saves everything and lets workers join or leave. hvd_train/driver.py
picks one and starts the loop.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from data.melon import write_json
from data.workdir import WorkdirError, identity, identity_mismatch, verify_workdir
from hvd_train.common import average, describe_horovod, elastic_enabled, fail, init_horovod, learning_rate
from hvd_train.config import ConfigError, TrainerConfig, load_config
from models.export import below_popularity, read_export_config, write_export


@dataclass
class Task:
    name: str  # shown in every line the loop prints, e.g. "dae"
    model: object  # a tf.Module
    variables: list  # what the optimizer trains
    loss: Callable  # (batch, epoch) -> (loss, {part: value}); called inside tf.function
    batches: Callable  # epoch -> this rank's tf.data.Dataset for that epoch (exactly `steps` batches)
    steps: int  # steps per epoch, the same on every rank
    batch_size: int  # per rank
    hidden: int  # d of the d^-0.5 learning-rate schedule
    validate: Callable  # () -> (scores with a "score" key, results to keep or None); collective: every rank calls it
    export: Callable  # (epoch, scores) -> the export's config.json
    describe: Callable = lambda scores: ""  # scores -> text for the epoch line
    loss_variants: Callable = lambda epoch: 0  # epoch -> a small key: a new graph is traced per key (e.g. ranking on)
    # (rank, size) -> {batches, steps, batch_size, validate} for another world size (elastic training re-shards)
    reshard: Callable | None = None
    decayed: list = field(default_factory=list)  # the variables train.weight_decay applies to
    export_weights: Callable | None = None  # model -> {name: array} for the export; None: every variable by path
    # embedding-table gradients stay rows end to end: merged per rank, allgathered, and Adam and weight decay
    # update only those rows (the DAE's sampled output); otherwise rows are densified before the update
    row_updates: bool = False
    unit: str = "playlists"  # what one example of a batch is, for the throughput in the epoch line


class Counters(NamedTuple):
    """The training state besides model and optimizer, as tf.Variables (checkpointed and broadcast)."""
    epoch_done: object
    best_score: object
    best_epoch: object
    loss_scale: object
    good_steps: object  # mixed precision: good steps in a row since the loss scale last changed


def state_variables(model, optimizer, counters: Counters) -> list:
    """Everything a rank's training state holds as tf.Variables, in one fixed order: the model's variables,
    the optimizer's step and Adam slots, the counters. Broadcast from rank 0 before the first step, and
    what an elastic state commits and syncs."""
    return list(model.variables) + [optimizer.iterations] + optimizer.m + optimizer.v + list(counters)


class FixedState:
    """The loop's position in fixed-size training: the fields of elastic.TrainingState (``epoch`` in progress,
    ``batch`` steps done in it, their loss ``sums`` over ``good`` finite steps) and a commit that does
    nothing, since no worker can join or leave."""

    def __init__(self, epoch: int):
        self.epoch, self.batch, self.sums, self.good = epoch, 0, {}, 0

    def commit(self) -> None:
        pass


@dataclass
class World:
    """What this process trains with at its current rank and size (rebuilt after an elastic world change):
    the task sharded for it, the traced steps, and on rank 0 the TensorBoard writer and checkpoint managers."""
    rank: int | None = None
    size: int | None = None
    task: object = None
    traced: dict = field(default_factory=dict)
    writer: object = None
    managers: object = None


def start(config_path: Path, overrides: list[str], workdir: Path, parse_config: Callable[[dict], TrainerConfig]):
    """Config, Horovod and work directory, in the order that never leaves a rank waiting.

    The config is read and typed by ``parse_config`` before ``hvd.init()`` (a bad key stops every rank at
    once); then the per-rank batch; then rank 0 verifies the work directory and broadcasts the verdict (in
    elastic mode every process verifies it itself: a worker that joins later must not wait on a broadcast).
    Returns ``(hvd, config, manifest)`` with the typed config, or the exit status when something is wrong.
    """
    try:
        config = parse_config(load_config(config_path, overrides))
    except ConfigError as e:
        return fail(str(e))
    hvd = init_horovod()

    rank, size = hvd.rank(), hvd.size()
    try:
        config.per_rank_batch(size)
    except ConfigError as e:
        return fail(str(e), rank)
    problem = None
    if rank == 0 or elastic_enabled():
        try:
            manifest = verify_workdir(workdir)
            for kind in ("train", "val"):  # each rank reads whole files of both
                if len(manifest["shards"][kind]) < size:
                    problem = (f"{workdir}: {len(manifest['shards'][kind])} {kind} shards cannot feed {size} ranks "
                               f"(each rank reads whole files); rerun data.preprocess with shards.min_shards >= {size}")
        except WorkdirError as e:
            problem = str(e)
    if not elastic_enabled():
        problem = hvd.broadcast_object(problem, root_rank=0, name="workdir_check")
    if problem:
        return fail(problem, rank)
    manifest = json.loads((Path(workdir) / "manifest.json").read_text(encoding="utf-8"))
    return hvd, config, manifest


def prepare(hvd, task: Task, config: TrainerConfig, manifest: dict, workdir: Path, out: Path):
    """Optimizer, counters and checkpoint; rank 0 restores the latest checkpoint of ``out`` (no collective call).

    Returns ``(optimizer, Counters, checkpoint, resumed)``: ``resumed`` is None, the restored checkpoint's
    path, or ``"ERROR message"`` (rank 0 only; the caller tells the other ranks).
    """
    import tensorflow as tf

    from models.layers import Adam

    train, hardware = config.train, config.hardware
    optimizer = Adam(task.variables, train.beta1, train.beta2, train.epsilon)
    epoch_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    loss_scale = tf.Variable(hardware.loss_scale_initial if hardware.mixed_precision else 1.0, dtype=tf.float32,
                             trainable=False, name="loss_scale")
    good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
    best_score = tf.Variable(-1e9, dtype=tf.float64, trainable=False, name="best_score")
    best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
    checkpoint = tf.train.Checkpoint(model=task.model, optimizer=optimizer, epoch=epoch_done, best_score=best_score,
                                     best_epoch=best_epoch, loss_scale=loss_scale)
    resumed = None
    if hvd.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
        recorded = out / "workdir.json"
        if latest and recorded.exists() and identity_mismatch(json.loads(recorded.read_text(encoding="utf-8")),
                                                              manifest):
            resumed = (f"ERROR {out} holds checkpoints trained on another work directory (other vocabularies "
                       f"or tokenizer than {workdir}); use a new --out")
        elif latest:
            try:
                checkpoint.restore(latest).assert_existing_objects_matched()
                resumed = latest
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                resumed = f"ERROR {latest} does not fit this model/config: {str(e).splitlines()[0]}"
        if not resumed or not resumed.startswith("ERROR"):
            write_json(identity(manifest), recorded)
    return optimizer, Counters(epoch_done, best_score, best_epoch, loss_scale, good_steps), checkpoint, resumed


def train_epochs(hvd, world: World, config: TrainerConfig, out: Path, optimizer, counters: Counters, checkpoint,
                 state) -> int:
    """The epoch loop, on every rank: from ``state.epoch`` on, that epoch from step ``state.batch``.

    ``state`` (a :class:`FixedState`, or elastic.TrainingState) holds the epoch in progress, the steps done
    in it and their loss sums; it is advanced after every step and ``state.commit()`` is called every
    ``elastic.commit_every_steps`` steps and after every epoch (a no-op unless training is elastic, where a
    commit may raise HostsUpdatedInterrupt on every worker). Returns the exit status: 0, 3 when training
    diverged, or :func:`finish`'s verdict on the ranks' weights.
    """
    import tensorflow as tf
    from tqdm import tqdm

    rank, size, task = hvd.rank(), hvd.size(), world.task
    tag, epochs, mixed = f"[{task.name}]", config.train.epochs, config.hardware.mixed_precision
    scale = config.lr_scale(size)
    lr = learning_rate(optimizer.iterations + 1, task.hidden, config.train.warmup_steps, scale)
    bad_in_a_row, since_commit, began = 0, 0, time.perf_counter()
    k = config.train.accumulation_steps
    updates = task.steps // k  # an epoch's updates; the last task.steps % k batches of each epoch are not read
    if not updates:
        return fail(f"{task.name}: an epoch holds {task.steps} batches per rank, fewer than "
                    f"train.accumulation_steps={k}; lower it or the per-rank batch", rank)
    for epoch in range(state.epoch, epochs + 1):
        key = task.loss_variants(epoch)
        if key not in world.traced:
            world.traced[key] = trace_step(hvd, task, config, optimizer, counters, scale, epoch)
        seen, started = 0, time.perf_counter()
        progress = tqdm(total=updates * k, initial=state.batch, desc=f"epoch {epoch}/{epochs}", disable=rank != 0,
                        unit="step", leave=False)
        pending = []  # with accumulation: the losses of the batches accumulated since the last update
        step = world.traced[key]
        for batch in task.batches(epoch).take(updates * k).skip(state.batch):
            seen += int(tf.shape(next(iter(batch.values())))[0])
            state.batch += 1
            progress.update(1)
            if k == 1:
                loss, parts, lr, skipped = step.run(batch)
            else:
                pending.append(step.accumulate(batch))
                if len(pending) < k:
                    continue
                lr, skipped = step.apply()
                loss = sum(float(p[0]) for p in pending) / k
                parts = {name: sum(float(p[1][name]) for p in pending) / k for name in pending[0][1]}
                pending = []
            if bool(skipped):  # the same on every rank
                bad_in_a_row += 1
                if rank == 0:
                    print(f"{tag} step {int(optimizer.iterations.numpy()) + 1} (epoch {epoch}): non-finite loss or "
                          f"gradients on some rank; skipped on all ranks ({bad_in_a_row} in a row)"
                          + (f", loss scale now {float(counters.loss_scale.numpy()):g}" if mixed else ""), flush=True)
                scale_left = mixed and float(counters.loss_scale.numpy()) > 1.0  # halving it may still help
                if bad_in_a_row >= config.train.max_bad_steps and not scale_left:
                    progress.close()
                    return stop_diverged(hvd, tag, checkpoint, out, bad_in_a_row, int(optimizer.iterations.numpy()) + 1,
                                         epoch)
            else:
                bad_in_a_row = 0
                state.good += 1
                for name, value in {"loss": loss, **parts}.items():
                    state.sums[name] = state.sums.get(name, 0.0) + float(value)
                progress.set_postfix(loss=f"{float(loss):.4f}")
            since_commit += 1  # updates: a commit never falls inside an accumulation
            if since_commit >= config.elastic.commit_every_steps:
                since_commit = 0
                state.commit()
        progress.close()
        metrics = average(hvd, {k: v / max(1, state.good) for k, v in state.sums.items()})
        throughput = seen * size / max(time.perf_counter() - started, 1e-9)
        # a budget spent or a stop asked for makes this epoch the last: validated and exported as the last is
        ending = out_of_time(hvd, tag, config.train.max_minutes, began) | stop_requested(hvd, tag, out, epoch)
        stop = finish_epoch(hvd, task, config, out, counters, world.writer, world.managers, epoch, metrics, lr,
                            throughput, last=ending) or ending
        state.epoch, state.batch, state.sums, state.good = (epochs + 1 if stop else epoch + 1), 0, {}, 0
        since_commit = 0
        state.commit()
        if stop:
            break
    return finish(hvd, task, counters, out)


GRADIENT_SCOPE = "gradient_allreduce"  # the name scope of the step's gradient collectives (Horovod's timeline)
_INJECTED = []  # faults: the NaN losses this process injected, one counter for every trace of the step


def _fault_counter():
    """The process's count of injected NaN losses (a tf.Variable made once: a step traced again after an elastic
    reset or a loss variant change keeps counting)."""
    import tensorflow as tf

    if not _INJECTED:
        _INJECTED.append(tf.Variable(0, dtype=tf.int64, trainable=False, name="faults_injected"))
    return _INJECTED[0]


def stop_requested(hvd, tag: str, out: Path, epoch: int) -> bool:
    """Whether a file ``OUT/STOP`` asks training to end after this epoch (``touch OUT/STOP``: checkpointed and
    exported as at any epoch end), rank 0 deciding for every rank (a collective call); rank 0 removes the file,
    so that a rerun resumes and trains on."""
    flag = out / "STOP"
    stop = hvd.broadcast_object(hvd.rank() == 0 and flag.exists(), root_rank=0, name="stop_requested")
    if stop and hvd.rank() == 0:
        flag.unlink(missing_ok=True)
        print(f"{tag} stop requested ({flag}): stopping after epoch {epoch}; removed the file", flush=True)
    return stop


def out_of_time(hvd, tag: str, max_minutes: float | None, began: float) -> bool:
    """train.max_minutes: whether this process's training time is spent, rank 0's clock deciding for every rank
    (a collective call when a budget is set)."""
    if max_minutes is None:
        return False
    spent = time.perf_counter() - began
    over = hvd.broadcast_object(spent >= 60.0 * max_minutes, root_rank=0, name="out_of_time")
    if over and hvd.rank() == 0:
        print(f"{tag} time budget spent: {spent / 60:.1f} of {max_minutes:g} minutes; stopping", flush=True)
    return over


def rank0_outputs(checkpoint, config: TrainerConfig, out: Path):
    """Rank 0's TensorBoard writer and checkpoint managers (the last K, and the best by validation score)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(out / "tensorboard"))
    managers = (tf.train.CheckpointManager(checkpoint, str(out / "checkpoints"), config.checkpoint.keep_last),
                tf.train.CheckpointManager(checkpoint, str(out / "best"), 1))
    return writer, managers


def announce(hvd, task: Task, config: TrainerConfig, out: Path, optimizer, counters: Counters, resumed) -> None:
    """Rank 0: the run's config.json and the opening lines (Horovod, switches, schedule, what was resumed)."""
    hardware = config.hardware
    tag, size, warmup = f"[{task.name}]", hvd.size(), config.train.warmup_steps
    scale = config.lr_scale(size)
    write_json(config.as_dict(), out / "config.json")
    print(f"{tag} {describe_horovod(hvd)}; mixed precision {'on' if hardware.mixed_precision else 'off'}, XLA "
          f"{'on' if hardware.xla else 'off'}, gradient compression {hardware.gradient_compression}, "
          f"embedding gradients {'dense allreduce' if hardware.sparse_as_dense else 'sparse allgather'}", flush=True)
    k = config.train.accumulation_steps
    batches = f"{task.batch_size} x {size} ranks" + (f" x {k} accumulated batches" if k > 1 else "")
    print(f"{tag} global batch {task.batch_size * size * k} ({batches}), {task.steps // k} steps per "
          f"epoch; learning rate {scale:g} x {task.hidden}^-0.5 x min(step^-0.5, "
          f"step x {warmup}^-1.5): peak {float(learning_rate(warmup, task.hidden, warmup, scale)):.3e} at step "
          f"{warmup} ({config.train.lr_scaling} scaling over {size} ranks)", flush=True)
    if resumed:
        print(f"{tag} resumed from {resumed}: epoch {int(counters.epoch_done.numpy())}, step "
              f"{int(optimizer.iterations.numpy())}, best score {float(counters.best_score.numpy()):.4f} (epoch "
              f"{int(counters.best_epoch.numpy())})", flush=True)


class Step(NamedTuple):
    """A traced training step. With ``train.accumulation_steps`` k = 1, ``run(batch)`` is the whole step:
    ``(loss, parts, learning rate, skipped on every rank)``. With k > 1, ``accumulate(batch)`` adds a batch's
    local gradients to the rank's accumulators and returns ``(loss, parts)``; after k of them ``apply()``
    allreduces their mean once, updates, zeroes the accumulators and returns ``(learning rate, skipped)``;
    ``sums`` are the accumulators, one per trained variable and of its shape."""
    run: Callable | None
    accumulate: Callable | None = None
    apply: Callable | None = None
    sums: list | None = None


def trace_step(hvd, task: Task, config: TrainerConfig, optimizer, counters: Counters, scale: float,
               epoch_for_loss: int) -> Step:
    """The training step as tf.functions (:class:`Step`)."""
    import tensorflow as tf

    hardware, faults = config.hardware, config.faults
    mixed, sparse_as_dense = hardware.mixed_precision, hardware.sparse_as_dense
    loss_scale, good_steps = counters.loss_scale, counters.good_steps
    warmup, weight_decay = config.train.warmup_steps, config.train.weight_decay
    accumulation = config.train.accumulation_steps
    compression = hvd.Compression.fp16 if hardware.gradient_compression == "fp16" else hvd.Compression.none
    nan_from = faults.nan_loss_from_step
    rank = hvd.rank()
    decayed = task.decayed if weight_decay else []
    injected = _fault_counter()

    def inject_nan():
        """faults: whether this batch's loss is NaN: from step nan_loss_from_step on, for nan_loss_steps batches
        (a skipped step does not advance the step counter, so the count is of batches injected; with
        train.accumulation_steps k, k batches make a step)."""
        due = optimizer.iterations + 1 >= nan_from
        if faults.nan_loss_steps is not None:
            due &= injected < faults.nan_loss_steps
        injected.assign_add(tf.cast(due, tf.int64))
        return due

    def forward(batch):
        with tf.GradientTape() as tape:
            loss, parts = task.loss(batch, epoch_for_loss)
            if nan_from is not None and rank == faults.nan_loss_rank:  # fault injection (drills, tests)
                loss += tf.where(inject_nan(), float("nan"), 0.0)
            scaled = loss * loss_scale
        return loss, parts, scaled, tape

    # XLA compiles this rank's forward and backward pass; Horovod's collectives stay outside the cluster
    # (they are not XLA ops): the gradients are allreduced after it, as without XLA.
    def local_gradients(batch):
        loss, parts, scaled, tape = forward(batch)
        return loss, parts, tape.gradient(scaled, task.variables)

    local = tf.function(local_gradients, jit_compile=True) if hardware.xla else local_gradients

    def allreduce(gradients):
        """The one gradient-reduction path: every step, with XLA or without, accumulated or not. Dense
        tensors are averaged; a table's IndexedSlices is densified first (``hardware.sparse_as_dense``) or
        travels as rows (allgathered; merged per rank first for a task with ``row_updates``). The scope
        names the collectives in Horovod's timeline (bench/comm.py reads them)."""
        with tf.name_scope(GRADIENT_SCOPE):
            return [hvd.allreduce(tf.convert_to_tensor(g) if sparse_as_dense else _merge_rows(g) if task.row_updates
                                  else g, op=hvd.Average, compression=compression) for g in gradients]

    def update(reduced, loss_finite):
        """Unscale, decide on every rank whether the step is finite, apply or skip: (lr, skipped)."""
        # row updates: the ranks' gathered rows merged once, for Adam and the weight decay alike
        gradients = [_unscale(_merge_rows(g) if task.row_updates else tf.convert_to_tensor(g), loss_scale)
                     for g in reduced]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(_values(g))) for g in gradients]) & loss_finite
        # every rank must take the same decision: one allreduce of "bad here"
        bad = hvd.allreduce(tf.cast(tf.logical_not(finite), tf.float32), op=hvd.Sum, name="bad_step") > 0
        lr = learning_rate(optimizer.iterations + 1, task.hidden, warmup, scale)

        def apply():
            optimizer.apply(gradients, task.variables, lr)
            for variable, gradient in zip(task.variables, gradients):  # decoupled weight decay (AdamW,
                if any(variable is d for d in decayed):  # Loshchilov & Hutter 2019), lazy as Adam on rows
                    _decay(variable, gradient, lr * weight_decay)
            if mixed:  # dynamic loss scaling: grow after loss_scale_growth_steps good steps in a row
                good_steps.assign_add(1)
                if_grow = good_steps >= hardware.loss_scale_growth_steps
                loss_scale.assign(tf.where(if_grow, loss_scale * 2.0, loss_scale))
                good_steps.assign(tf.where(if_grow, tf.constant(0, tf.int64), good_steps))
            return tf.constant(False)

        def skip():
            if mixed:  # an overflow at this scale: halve it (floor 1) and try again
                loss_scale.assign(tf.maximum(loss_scale / 2.0, 1.0))
                good_steps.assign(0)
            return tf.constant(True)

        return lr, tf.cond(bad, skip, apply)

    signature = [task.batches(1).element_spec]
    if accumulation == 1:
        def step(batch):
            loss, parts, gradients = local(batch)
            lr, skipped = update(allreduce(gradients), tf.reduce_all(tf.math.is_finite(loss)))
            return loss, parts, lr, skipped

        return Step(tf.function(step, input_signature=signature))

    # k > 1: per-rank sums of the k batches' (scaled) gradients, and of their non-finite losses
    sums = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in task.variables]
    bad_losses = tf.Variable(0.0, trainable=False)

    def accumulate(batch):
        loss, parts, gradients = local(batch)
        for total, g in zip(sums, gradients):
            if g is not None:
                total.assign_add(tf.convert_to_tensor(g))
        bad_losses.assign_add(tf.cast(tf.logical_not(tf.math.is_finite(loss)), tf.float32))
        return loss, parts

    def apply_accumulated():
        lr, skipped = update(allreduce([total / accumulation for total in sums]), tf.equal(bad_losses, 0.0))
        for total in sums:  # after the update reads them: tf.function runs stateful ops in program order
            total.assign(tf.zeros_like(total))
        bad_losses.assign(0.0)
        return lr, skipped

    return Step(None, tf.function(accumulate, input_signature=signature), tf.function(apply_accumulated), sums)


def finish_epoch(hvd, task: Task, config: TrainerConfig, out: Path, counters: Counters, writer, managers, epoch: int,
                 metrics: dict, lr, throughput: float, last: bool = False) -> bool:
    """The end of an epoch on every rank: validation when due (collective; always after the ``last`` epoch), the
    best export and checkpoints, TensorBoard and the epoch line on rank 0. Returns whether training stops early
    (the same on every rank)."""
    import tensorflow as tf

    from models.weights import weights_by_path

    rank, tag = hvd.rank(), f"[{task.name}]"
    epoch_done, best_score, best_epoch = counters.epoch_done, counters.best_score, counters.best_epoch
    epochs, every, patience = config.train.epochs, config.validation.every_epochs, config.validation.patience_epochs
    epoch_done.assign(epoch)
    line = f"{tag} epoch {epoch}: loss {metrics['loss']:.5f}, lr {float(lr):.3e}, {throughput:.0f} {task.unit}/s"

    stop = False
    if epoch % every == 0 or epoch == epochs or last:
        scores, results = task.validate()
        line += f"; validation {task.describe(scores)}"
        if scores["score"] > float(best_score.numpy()):
            best_score.assign(scores["score"])
            best_epoch.assign(epoch)
            if rank == 0:
                managers[1].save(checkpoint_number=epoch)
                if results is not None:
                    write_json(results, out / "validation_results.json")  # the best epoch's, official format
                weights = (task.export_weights or weights_by_path)(task.model)
                write_export(out / "export", weights, task.export(epoch, scores))
                line += " (best)"
        stop = epoch - int(best_epoch.numpy()) >= patience
        if rank == 0:
            with writer.as_default(step=epoch):
                for name, value in scores.items():
                    if isinstance(value, (int, float)):
                        tf.summary.scalar(f"validation/{name}", value)
    if rank == 0:
        managers[0].save(checkpoint_number=epoch)
        with writer.as_default(step=epoch):
            for name, value in metrics.items():
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("learning_rate", float(lr))
            tf.summary.scalar("playlists_per_second", throughput)
        writer.flush()
        print(line, flush=True)
    if stop and rank == 0:
        print(f"{tag} early stop: no improvement for {patience} epochs (best {float(best_score.numpy()):.4f} "
              f"at epoch {int(best_epoch.numpy())})", flush=True)
    return stop


def finish(hvd, task: Task, counters: Counters, out: Path) -> int:
    """Every rank's weight checksum compared (a collective call); the closing lines on rank 0."""
    import tensorflow as tf

    tag = f"[{task.name}]"
    # Data parallelism keeps every rank's weights identical; check it rather than assume it.
    checksums = hvd.allgather_object(float(sum(tf.reduce_sum(tf.abs(v)) for v in task.variables)), name="checksums")
    if hvd.rank() == 0:
        print(f"{tag} weight checksums by rank: {checksums}", flush=True)
        print(f"{tag} done: best validation score {float(counters.best_score.numpy()):.4f} at epoch "
              f"{int(counters.best_epoch.numpy())}; export in {out / 'export'}", flush=True)
        weak = below_popularity(read_export_config(out / "export"))
        if weak:
            print(f"{tag} warning: {weak}; inference answers with popularity in this model's place "
                  f"(train longer, or on more data)", flush=True)
    if len(set(checksums)) != 1:
        fail("ranks finished with different weights", hvd.rank())
        return 1
    return 0


def _merge_rows(gradient):
    """An ``IndexedSlices`` gradient with each row once (models/layers.py ``merge_rows``); any other unchanged."""
    import tensorflow as tf

    from models.layers import merge_rows

    return merge_rows(gradient) if isinstance(gradient, tf.IndexedSlices) else gradient


def _decay(variable, gradient, amount):
    """``variable`` -= amount x variable: every row for a dense gradient, only the gradient's rows for an
    ``IndexedSlices`` one with each row once (the rows a sampled step touched)."""
    import tensorflow as tf

    if isinstance(gradient, tf.IndexedSlices):
        variable.scatter_sub(tf.IndexedSlices(amount * tf.gather(variable, gradient.indices), gradient.indices))
    else:
        variable.assign_sub(amount * variable)


def _values(gradient):
    import tensorflow as tf

    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def _unscale(gradient, loss_scale):
    import tensorflow as tf

    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values / loss_scale, gradient.indices, gradient.dense_shape)
    return gradient / loss_scale


def stop_diverged(hvd, tag: str, checkpoint, out: Path, bad: int, step: int, epoch: int) -> int:
    """Training diverged: every rank restores rank 0's last checkpoint (nothing newer is written) and stops."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(out / "checkpoints")) if hvd.rank() == 0 else None
    latest = hvd.broadcast_object(latest, root_rank=0, name="diverged_restore")
    if latest and hvd.rank() == 0:
        checkpoint.restore(latest)
    hvd.broadcast_variables(list(checkpoint.model.variables), root_rank=0)
    if hvd.rank() == 0:
        print(f"{tag} error: training diverged: {bad} steps in a row with a non-finite loss or gradients, the last "
              f"at step {step} (epoch {epoch}); stopped. "
              + (f"Restored the last good checkpoint {latest}; " if latest else "No checkpoint was written yet; ")
              + "rerunning resumes from it: lower the learning rate first (train.warmup_steps, train.lr_scaling).",
              file=sys.stderr, flush=True)
    return 3
