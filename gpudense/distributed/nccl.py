"""The NCCL communicator: CuPy arrays on one GPU per rank, NCCL collectives, MPI for the rest.

NCCL (``cupy.cuda.nccl``, whose CuPy-side code is
:mod:`gpudense.backends.cuda.nccl_engine`) sums and broadcasts the arrays, enqueued
on CuPy's current stream: the optimizer step that follows on that stream
sees the result without the host waiting. MPI (an
:class:`~gpudense.distributed.mpi.MPICommunicator`) starts NCCL, carries the
small Python objects of the start-up checks and aborts the job.
"""

from __future__ import annotations

from typing import Any, NoReturn

from gpudense.distributed.comm import Communicator
from gpudense.distributed.mpi import MPICommunicator

__all__ = ["NCCLCommunicator"]


class NCCLCommunicator(Communicator):
    """Collectives on CuPy arrays through NCCL, one GPU per rank; started through MPI.

    Args:
        mpi: The :class:`~gpudense.distributed.mpi.MPICommunicator` over
            ``MPI.COMM_WORLD`` (NCCL is bootstrapped on the MPI world).

    Creating one is collective. The current CuPy device must already be this
    rank's GPU (:func:`gpudense.distributed.init` sees to it), and no two
    ranks may share a GPU (NCCL refuses it).

    Raises:
        BackendUnavailableError: CuPy, a GPU or NCCL is missing.
    """

    kind = "nccl"
    array_kinds = ("cupy",)

    def __init__(self, mpi: MPICommunicator) -> None:
        from gpudense.backends.cuda.nccl_engine import NcclEngine

        self.mpi = mpi
        self.rank, self.size = mpi.rank, mpi.size
        self.engine = NcclEngine(self.rank, self.size, mpi.broadcast_object)
        self.device = self.engine.device

    def _allreduce_sum(self, a: Any) -> None:
        self.engine.all_reduce(a)

    def _broadcast(self, a: Any, root: int) -> None:
        self.engine.broadcast(a, root)

    def barrier(self) -> None:
        """Finish this rank's queued GPU work, then an MPI barrier."""
        self.engine.synchronize()
        self.mpi.barrier()

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, through MPI."""
        return self.mpi.allgather_object(obj)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``obj``, through MPI."""
        return self.mpi.broadcast_object(obj, root)

    def abort(self, code: int = 1) -> NoReturn:
        """``MPI_Abort``: the launcher ends every rank of the job."""
        self.mpi.abort(code)

    def describe(self) -> str:
        """E.g. ``"NCCL 2.27.7 (started through MPI (MPICH ...)), 8 ranks, one GPU each"``."""
        return (f"NCCL {self.engine.version()} (started through MPI: {self.mpi.library()}), "
                f"{self.size} rank{'s' if self.size != 1 else ''}, one GPU each")
