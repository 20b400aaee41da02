"""Horovod at one rank, in process: what the trainers' task builders and the loop's ``prepare`` and
``trace_step`` call on Horovod, with every collective the identity, as Horovod's own are at size 1.

For code that runs a trainer's step in a process that later starts ``mpirun`` or ``horovodrun``
(bench/comm.py, the tests): ``hvd.init()`` would MPI_Init that process, whose children then inherit Open
MPI's singleton environment (OMPI_MCA_ess, PMIX_*), and an ``mpirun`` started after it exits 1.
"""

from __future__ import annotations


class OneRank:
    """rank 0 of 1; allreduce and broadcast pass their input through."""

    class Compression:
        none, fp16 = "none", "fp16"

    Average, Sum = "average", "sum"

    def rank(self) -> int:
        return 0

    def size(self) -> int:
        return 1

    def allreduce(self, tensor, op=None, name=None, compression=None):
        return tensor

    def broadcast_object(self, obj, root_rank=0, name=None):
        return obj
