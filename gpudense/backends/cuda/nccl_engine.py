"""The CuPy side of multi-GPU training: one GPU per rank, and NCCL through ``cupyx.distributed``.

:func:`use_device` makes the rank's GPU CuPy's current device (the rank's
index among the ranks of its node, modulo the node's device count), before
anything is allocated. :class:`NcclEngine` wraps CuPy's
``cupyx.distributed.NCCLBackend``, bootstrapped through MPI (``use_mpi=True``:
rank 0 makes NCCL's unique id and MPI broadcasts it); its collectives are
enqueued on CuPy's current stream and return without waiting.
:class:`gpudense.distributed.nccl.NCCLCommunicator` is the communicator
built on it.

CuPy is imported by these functions, not by importing this module.
"""

from __future__ import annotations

import warnings
from typing import Any

from gpudense.backends import BackendUnavailableError

__all__ = ["NcclEngine", "nccl_unavailable_reason", "use_device"]


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

    Creating it is collective over ``MPI.COMM_WORLD`` (CuPy's
    ``NCCLBackend(size, rank, use_mpi=True)``); the current CuPy device must
    already be this rank's (:func:`use_device`).

    Raises:
        BackendUnavailableError: NCCL cannot be loaded.
    """

    def __init__(self, rank: int, size: int) -> None:
        reason = nccl_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(reason)
        import cupy
        from cupy.cuda import nccl
        from cupyx.distributed import NCCLBackend

        self._cupy = cupy
        self._nccl = nccl
        self.device = int(cupy.cuda.runtime.getDevice())
        self._comm = NCCLBackend(int(size), int(rank), use_mpi=True)

    def all_reduce(self, a: Any) -> None:
        """Sum the C-contiguous CuPy array ``a`` over all ranks, in place, on the current stream."""
        self._comm.all_reduce(a, a, op="sum")

    def broadcast(self, a: Any, root: int) -> None:
        """Copy ``a`` of rank ``root`` into ``a`` everywhere, on the current stream."""
        self._comm.broadcast(a, root=root)

    def synchronize(self) -> None:
        """Wait for the work queued on the current stream (the collectives included)."""
        self._cupy.cuda.get_current_stream().synchronize()

    def version(self) -> str:
        """NCCL's version, e.g. ``"2.27.7"``."""
        v = int(self._nccl.get_version())
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 10000 else f"{v // 1000}.{v // 100 % 10}.{v % 100}"
