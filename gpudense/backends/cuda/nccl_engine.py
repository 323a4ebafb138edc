"""The CuPy side of multi-GPU training: one GPU per rank, and NCCL through ``cupy.cuda.nccl``.

:func:`use_device` makes the rank's GPU CuPy's current device (the rank's
index among the ranks of its node, modulo the node's device count), before
anything is allocated. :class:`NcclEngine` holds a
``cupy.cuda.nccl.NcclCommunicator``, bootstrapped through MPI (rank 0 makes
NCCL's unique id and MPI broadcasts it, as ``cupyx.distributed.NCCLBackend``
does with ``use_mpi=True``); its collectives are enqueued on CuPy's current
stream and return without waiting. It passes NCCL's own datatype for each
dtype (:data:`NCCL_TYPES`), bfloat16 (``ncclBfloat16``) included: CuPy's
``NCCLBackend`` maps dtypes through a table without bfloat16 and refuses
bfloat16 arrays.
:class:`gpudense.distributed.nccl.NCCLCommunicator` is the communicator
built on it.

CuPy is imported by these functions, not by importing this module.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from gpudense.backends import BackendUnavailableError

#: NCCL's datatype (the name of its ``cupy.cuda.nccl`` constant) for each dtype a collective takes.
NCCL_TYPES = {"float16": "NCCL_FLOAT16", "bfloat16": "NCCL_BFLOAT16", "float32": "NCCL_FLOAT32",
              "float64": "NCCL_FLOAT64", "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8",
              "int8": "NCCL_INT8"}


def nccl_unavailable_reason() -> str | None:
    """None when CuPy can use NCCL here; otherwise why not, with the install command CuPy suggests.

    Needs no GPU. CuPy loads NCCL from NVIDIA's wheel (``nvidia-nccl-cu12``
    / ``nvidia-nccl-cu13``) or a system library.

    Example:
        >>> reason = nccl_unavailable_reason()
        >>> reason is None or "NCCL" in reason
        True
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            from cupy.cuda import nccl
        except ImportError as exc:
            return f"NCCL needs CuPy, which is not installed ({exc})"
        except Exception as exc:  # a broken CUDA installation
            return f"CuPy's NCCL module does not load ({exc})"
    if getattr(nccl, "available", False):
        return None
    text = "\n".join(str(w.message) for w in caught)
    cause = next((line.strip() for line in text.splitlines() if line.strip().startswith("Reason:")), "")
    command = next((line.strip().lstrip("$ ") for line in text.splitlines() if "pip install" in line), "")
    cause = cause.removeprefix("Reason:").strip() or "the NCCL library is not found"
    command = command or "pip install nvidia-nccl-cu12 (CUDA 12) or nvidia-nccl-cu13 (CUDA 13)"
    return f"CuPy cannot load NCCL ({cause}); install it with {command}"


def use_device(local_rank: int) -> tuple[int, int]:
    """Make GPU ``local_rank % device_count`` CuPy's current device; returns ``(device, device_count)``.

    Call it before the first CuPy allocation of the process, so that every
    rank of a node works on its own GPU (ranks beyond the GPU count share).

    Raises:
        BackendUnavailableError: CuPy or a CUDA device is missing.
    """
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(f"CuPy is not installed ({exc})") from exc
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        raise BackendUnavailableError(f"no CUDA device is usable: {exc}") from exc
    if count < 1:
        raise BackendUnavailableError("the CUDA runtime reports no device")
    device = int(local_rank) % count
    cupy.cuda.Device(device).use()
    return device, count


class NcclEngine:
    """A NCCL communicator over the MPI world: ``size`` ranks, this one ``rank``, one GPU each.

    Creating it is collective over the ranks: ``broadcast_object(obj, root)``
    (the MPI communicator's) carries NCCL's unique id from rank 0 to all. The
    current CuPy device must already be this rank's (:func:`use_device`).

    Raises:
        BackendUnavailableError: NCCL cannot be loaded.
    """

    def __init__(self, rank: int, size: int, broadcast_object: Callable[[Any, int], Any]) -> None:
        reason = nccl_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(reason)
        import cupy
        from cupy.cuda import nccl

        self._cupy = cupy
        self._nccl = nccl
        self.device = int(cupy.cuda.runtime.getDevice())
        unique_id = broadcast_object(nccl.get_unique_id() if rank == 0 else None, 0)
        self._comm = nccl.NcclCommunicator(int(size), unique_id, int(rank))

    def _datatype(self, a: Any) -> int:
        name = NCCL_TYPES.get(a.dtype.name)
        if name is None:
            raise TypeError(f"NCCL collectives take {', '.join(NCCL_TYPES)} arrays; got {a.dtype.name}")
        if not a.flags.c_contiguous:
            raise ValueError(f"NCCL collectives take C-contiguous arrays; got strides {a.strides}")
        return int(getattr(self._nccl, name))

    def all_reduce(self, a: Any) -> None:
        """Sum the C-contiguous CuPy array ``a`` over all ranks, in place, on the current stream."""
        datatype = self._datatype(a)
        stream = self._cupy.cuda.get_current_stream().ptr
        self._comm.allReduce(a.data.ptr, a.data.ptr, a.size, datatype, self._nccl.NCCL_SUM, stream)

    def broadcast(self, a: Any, root: int) -> None:
        """Copy ``a`` of rank ``root`` into ``a`` everywhere, on the current stream."""
        datatype = self._datatype(a)
        stream = self._cupy.cuda.get_current_stream().ptr
        self._comm.broadcast(a.data.ptr, a.data.ptr, a.size, datatype, int(root), stream)

    def synchronize(self) -> None:
        """Wait for the work queued on the current stream (the collectives included)."""
        self._cupy.cuda.get_current_stream().synchronize()

    def version(self) -> str:
        """NCCL's version, e.g. ``"2.27.7"``."""
        v = int(self._nccl.get_version())
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 10000 else f"{v // 1000}.{v // 100 % 10}.{v % 100}"
