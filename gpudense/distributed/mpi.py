"""The MPI communicator (mpi4py), and what the launcher tells a process before MPI starts.

:class:`MPICommunicator` runs the collectives through mpi4py on NumPy arrays.
CuPy arrays go to MPI directly where the MPI library is CUDA-aware (after
the current stream is synchronised, since MPI knows nothing of CUDA streams),
and through host buffers otherwise, which is said once, with a
:class:`HostStagingWarning`. An MPI library is taken as CUDA-aware when its
world communicator lists a ``cuda`` memory kind in the MPI 4.1 info key
``mpi_memory_alloc_kinds`` (how to ask for it depends on the MPI library),
or when the environment says so: ``GPUDENSE_MPI_CUDA_AWARE=1`` (``0`` forces
host buffers).

mpi4py is imported on first use, never by ``import gpudense``; importing it
starts MPI (``MPI_Init``).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, NoReturn

import numpy as np

import gpudense._env as _env
from gpudense.backends import backend_of
from gpudense.distributed.comm import Communicator

#: Environment variable that states whether MPI takes CUDA device memory ("1") or not ("0").


class DistributedUnavailableError(RuntimeError):
    """mpi4py or the MPI library it needs cannot be loaded."""


class HostStagingWarning(RuntimeWarning):
    """CuPy arrays go through host buffers: the MPI library is not known to be CUDA-aware."""


def launched_world_size(environ: Any = None) -> int | None:
    """The number of processes a launcher (mpiexec, srun) started, read from the environment.

    Reads the launchers' variables (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``, ...) without starting MPI; a hint only (the
    MPI world, once started, is the truth).

    Returns:
        The largest size found, or None when no launcher variable is set.

    Example:
        >>> launched_world_size({"PMI_SIZE": "4"}), launched_world_size({})
        (4, None)
    """
    sizes = [int(text) for text in _env.launcher_sizes(environ) if text.isdigit()]
    return max(sizes) if sizes else None


def import_mpi() -> Any:
    """``mpi4py.MPI``, imported (which starts MPI); a one-line error naming the extra when it cannot load.

    Raises:
        DistributedUnavailableError: mpi4py is missing, or its MPI library
            does not load.
    """
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DistributedUnavailableError(
            f"distributed training needs mpi4py and an MPI library ({reason}); "
            "install them with pip install 'gpudense[distributed]'"
        ) from exc
    return MPI


def _cuda_aware(comm: Any) -> tuple[bool, str]:
    """Whether the MPI of ``comm`` takes CUDA device memory, and how that is known."""
    env = _env.mpi_cuda_aware()
    if env is not None:
        return env, f"{_env.MPI_CUDA_AWARE}={_env.text(_env.MPI_CUDA_AWARE)}"
    kinds = ""
    try:
        info = comm.Get_info()
        try:
            kinds = info.Get("mpi_memory_alloc_kinds") or ""
        finally:
            info.Free()
    except Exception:  # an MPI older than 4.1 may not know the key
        kinds = ""
    aware = any(k.strip().startswith("cuda") for k in kinds.split(","))
    return aware, f"mpi_memory_alloc_kinds={kinds or '(not reported)'}"


class MPICommunicator(Communicator):
    """Collectives through mpi4py: NumPy arrays, and CuPy arrays (directly or through host buffers).

    Args:
        comm: An ``mpi4py.MPI.Comm``; default ``MPI.COMM_WORLD``.

    Creating one is collective (every rank must): it finds the ranks that
    share this node (``local_rank``, ``local_size``), which pick the GPUs.

    Attributes:
        cuda_aware: Whether CuPy arrays are passed to MPI as they are.
        local_rank, local_size: This rank's index among the ranks on its
            node, and their number.

    Raises:
        DistributedUnavailableError: mpi4py or MPI cannot be loaded.
    """

    kind = "mpi"
    array_kinds = ("numpy", "cupy")

    def __init__(self, comm: Any = None) -> None:
        MPI = import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        try:
            self.local_rank, self.local_size = int(node.Get_rank()), int(node.Get_size())
        finally:
            node.Free()
        self.cuda_aware, self.cuda_aware_reason = _cuda_aware(self.comm)
        self._float16 = _has_float16(MPI)
        self._staging_said = False

    def _allreduce_sum(self, a: Any) -> None:
        self._on_host_or_device(a, lambda buf: self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM))

    def _broadcast(self, a: Any, root: int) -> None:
        self._on_host_or_device(a, lambda buf: self.comm.Bcast(buf, root=root))

    def _on_host_or_device(self, a: Any, call: Any) -> None:
        """Run the MPI ``call`` on ``a``: directly, or on a host copy written back to ``a``."""
        if isinstance(a, np.ndarray):
            if (a.dtype == np.float16 and not self._float16) or a.dtype.name == "bfloat16":
                wide = a.astype(np.float32)  # no half (or bfloat16) type in this MPI: reduce in float32, round once
                call(wide)
                a[...] = wide
            else:
                call(a)
            return
        # A CuPy array: MPI does not see CUDA streams, so finish the queued work first.
        backend_of(a).synchronize()
        if self.cuda_aware and (a.dtype != np.float16 or self._float16) and a.dtype.name != "bfloat16":
            call(a)
            return
        if not self._staging_said:
            self._staging_said = True
            warnings.warn(HostStagingWarning(
                "gpudense: CuPy arrays go through host buffers for MPI, which is not known to be CUDA-aware "
                f"({self.cuda_aware_reason}); set {CUDA_AWARE_ENV}=1 if it is, or use NCCL"), stacklevel=4)
        host = a.get()
        self._on_host_or_device(host, call)
        a.set(host)

    def barrier(self) -> None:
        """MPI barrier."""
        self.comm.Barrier()

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` through ``comm.allgather`` (pickle)."""
        return list(self.comm.allgather(obj))

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``obj`` through ``comm.bcast`` (pickle)."""
        self._check_root(root)
        return self.comm.bcast(obj, root=root)

    def abort(self, code: int = 1) -> NoReturn:
        """``MPI_Abort``: the launcher ends every rank of the job."""
        sys.stderr.flush()
        self.comm.Abort(int(code))
        os._exit(int(code))  # MPI_Abort can return before the launcher's kill arrives; an exit is also seen

    def library(self) -> str:
        """The MPI library's name and version, e.g. ``"MPICH Version: 5.0.2"``."""
        first = self.MPI.Get_library_version().strip().splitlines()
        return " ".join(first[0].split()) if first else "MPI"

    def describe(self) -> str:
        """E.g. ``"MPI (MPICH Version: 5.0.2), 2 ranks"``."""
        return f"MPI ({self.library()}), {self.size} rank{'s' if self.size != 1 else ''}"


def _has_float16(MPI: Any) -> bool:
    """Whether this MPI has a half-precision type mpi4py can use (MPICH's MPIX_C_FLOAT16 is one)."""
    try:
        from mpi4py.util.dtlib import from_numpy_dtype

        return from_numpy_dtype(np.dtype(np.float16)) != MPI.DATATYPE_NULL
    except Exception:
        return False
