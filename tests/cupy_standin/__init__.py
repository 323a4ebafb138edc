"""A stand-in for CuPy 14 that runs without a GPU, as strict as CuPy where gpudense meets it.

Arrays are NumPy arrays behind a ``cupy.ndarray`` that refuses what CuPy
refuses: NumPy arrays mixed into its operations, implicit conversion to
NumPy, dtypes CuPy's type tables lack. ``RawModule``/``RawKernel`` run the
launched entry point through the host C++ build of the same ``kernels/*.cu``
(tests/kernel_build.py), with the launch's grid, block and arguments checked
against the kernel's C signature; ``ElementwiseKernel`` runs its body
through a host build as well; ``cupy.cublas.gemm`` follows CuPy's layout
rules and refuses what cuBLAS refuses; ``cupy.cuda.nccl`` and
``cupyx.distributed.NCCLBackend`` carry NCCL's and CuPy's dtype tables, the
collectives done over MPI between processes. Streams, events, NVTX and the
memory pool record their calls and do nothing else.

Every behaviour that mirrors CuPy names, in one comment, where CuPy 14.2
does it (file and function). ``tests/cuda/test_standin_pins.py`` pins the
names, signatures and the NCCL dtype table to the CuPy installed.

Use :func:`installed` (a context manager) or :func:`install`: both put the
stand-in into ``sys.modules`` as ``cupy``, ``cupy.cuda``, ... and
``cupyx``; the backend registry must be reset around it.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

from cupy_standin import arrays, device

__all__ = ["CALLS", "install", "installed", "modules", "uninstall"]

#: Every recorded call (stream and event operations, NVTX ranges, pool queries, launches), in order.
CALLS = device.CALLS

_NAMES = ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.nvtx", "cupy.cuda.compiler", "cupy.cuda.memory",
          "cupy.cuda.nccl", "cupy.cublas", "cupyx", "cupyx.distributed", "cupy_backends", "cupy_backends.cuda",
          "cupy_backends.cuda.libs", "cupy_backends.cuda.libs.nccl")


def modules() -> dict[str, Any]:
    """The stand-in's modules, by the names CuPy's modules have."""
    return {
        "cupy": arrays.cupy,
        "cupy.cuda": device.cuda,
        "cupy.cuda.runtime": device.runtime,
        "cupy.cuda.nvtx": device.nvtx,
        "cupy.cuda.compiler": device.compiler,
        "cupy.cuda.memory": device.memory,
        "cupy.cuda.nccl": device.nccl,
        "cupy.cublas": device.cublas,
        "cupyx": device.cupyx,
        "cupyx.distributed": device.distributed,
    }


_saved: list[dict[str, Any]] = []


def install() -> None:
    """Put the stand-in into ``sys.modules`` in place of CuPy (and hide the real CuPy's other modules)."""
    _saved.append({k: v for k, v in sys.modules.items() if k.split(".")[0] in ("cupy", "cupyx", "cupy_backends")})
    for name in list(sys.modules):
        if name.split(".")[0] in ("cupy", "cupyx", "cupy_backends"):
            del sys.modules[name]
    sys.modules.update(modules())
    for name in _NAMES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # import fails: not in the stand-in


def uninstall() -> None:
    """Restore the modules :func:`install` replaced."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("cupy", "cupyx", "cupy_backends"):
            del sys.modules[name]
    if _saved:
        sys.modules.update(_saved.pop())


@contextlib.contextmanager
def installed() -> Iterator[Any]:
    """The stand-in as ``cupy`` inside the block; the backend registry starts empty in it and is as before after it."""
    import gpudense.backends as registry

    saved = dict(registry._instances), registry._auto
    install()
    registry._instances.clear()
    registry._auto = None
    try:
        yield arrays.cupy
    finally:
        uninstall()
        registry._instances.clear()
        registry._instances.update(saved[0])
        registry._auto = saved[1]
