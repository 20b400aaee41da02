"""Elastic Horovod training: the trainers keep running while workers leave and join.

Launch any trainer with horovodrun's elastic options and a host-discovery script; nothing else changes::

    horovodrun -np 2 --min-np 1 --max-np 2 --host-discovery-script launch/elastic/discover_hosts.sh \
        python hvd_train/dae.py --work WORKDIR --out RUNDIR

horovodrun then runs the workers over Gloo and sets ``HOROVOD_ELASTIC=1`` in their environment, which is
how hvd_train/driver.py knows to run the epoch loop (hvd_train/loop.py ``train_epochs``, the one fixed-size
training runs too) under ``hvd.elastic.run`` with the state defined here. The shape is Horovod's TF2 recipe
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

And one gap in Horovod 0.28.1's own TF wrapper is closed here (:func:`roll_back_on_lost_peers`): it turns a
failed collective into a roll-back only when the error's text names the op type, and swallows any other
``UnknownError`` (the wrapped function then returns None). Inside a tf.function a collective given a name
(the loop's ``bad_step`` vote) fails as "Detected at node bad_step ... Horovod has been shut down": the
surviving worker returned None, exited 0, and horovodrun ended the whole job instead of going on with one
worker (seen in CI when the peer died just before that vote).
"""

from __future__ import annotations

import copy
import functools


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


def roll_back_on_lost_peers(train):
    """``train(state, ...)`` for ``hvd.elastic.run``, with every TensorFlow ``UnknownError`` that comes from
    Horovod (a collective failed because a peer died: "Horovod has been shut down", whatever the op's name)
    raised as ``HorovodInternalError``, which ``hvd.elastic.run`` answers by restoring the last commit and
    going on with the workers left; any other ``UnknownError`` is raised as a RuntimeError, which Horovod's
    wrapper passes on instead of swallowing."""
    import tensorflow as tf
    from horovod.common.exceptions import HorovodInternalError

    @functools.wraps(train)
    def wrapper(state, *args, **kwargs):
        try:
            return train(state, *args, **kwargs)
        except tf.errors.UnknownError as e:
            if "Horovod" in e.message:
                raise HorovodInternalError(e) from e
            raise RuntimeError(f"{type(e).__name__}: {e.message}") from e
    return wrapper
