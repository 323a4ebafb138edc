"""Data-parallel training on MPI (CPU ranks, or GPUs through MPI) and NCCL (GPUs).

N processes, started by a launcher (``mpiexec -n N``, ``srun``), each hold
the whole model and take 1/N of every batch; after backward the gradients
are summed over the processes by an all-reduce, so every process takes the
same optimizer step. Nothing here is hand-rolled: MPI through mpi4py, NCCL
through CuPy's ``cupyx.distributed.NCCLBackend``.

* :func:`init` starts the communicator (NCCL on the CuPy backend, MPI on
  NumPy, or as asked); :class:`Communicator` is the seam: ``rank``,
  ``size``, ``allreduce`` (sum or mean), ``broadcast``, ``barrier``.
* :class:`GradientBuckets` all-reduces the gradients in a few flat buffers.
* ``gpudense.training.fit(..., comm=comm)`` trains data-parallel: its one
  loop calls the hooks of :class:`DataParallel` (which rows this rank takes,
  the gradient all-reduce after backward, the sums of the metrics);
  ``gpudense train`` does it under a launcher by itself.
* :func:`abort_on_error` ends the whole job when one rank fails, instead of
  leaving the others waiting.

Nothing of this is imported by ``import gpudense``, and mpi4py (which starts
MPI) only by :func:`init` or the MPI communicator. docs/distributed.md is the
manual.

Example (a script, run as ``mpiexec -n 2 python train.py``)::

    from gpudense import distributed
    from gpudense.training import TrainConfig, fit

    with distributed.abort_on_error("train.py"):
        comm = distributed.init()
        history = fit(model, optimizer, data, TrainConfig(epochs=3, batch_size=64, rng=0), comm=comm)
        if comm.rank == 0:
            print(history.test_acc[-1])
"""

from gpudense.distributed.buckets import DEFAULT_BUCKET_BYTES, GradientBuckets
from gpudense.distributed.comm import Communicator, LocalCommunicator
from gpudense.distributed.errors import CollectiveError, MismatchError
from gpudense.distributed.launch import KINDS, DistributedFallbackWarning, abort_on_error, init, run_on_root
from gpudense.distributed.mpi import (
    DistributedUnavailableError,
    HostStagingWarning,
    MPICommunicator,
    launched_world_size,
)
from gpudense.distributed.parallel import DataParallel, split_rows

__all__ = [
    "DEFAULT_BUCKET_BYTES",
    "KINDS",
    "CollectiveError",
    "Communicator",
    "DataParallel",
    "DistributedFallbackWarning",
    "DistributedUnavailableError",
    "GradientBuckets",
    "HostStagingWarning",
    "LocalCommunicator",
    "MPICommunicator",
    "MismatchError",
    "abort_on_error",
    "init",
    "launched_world_size",
    "run_on_root",
    "split_rows",
]
