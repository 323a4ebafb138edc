"""The kernels' source, compiler options and compiled module.

``kernels/bias_grad.cu`` (the bias gradient, the fused activation gradient
and the forward pass's bias and activation) is read as text
(:func:`kernel_source`), prefixed with a ``#line`` directive so that
compiler messages name the file, and built with NVRTC through
``cupy.RawModule`` once per device (:class:`KernelCache`). The constants the
kernels share with Python (block size, unroll depth and vector width from
:mod:`gpudense.backends.cuda.plan`; GELU's constants from
:mod:`gpudense.activation_math`) are given to the compiler as ``-D`` options
by :func:`kernel_defines`; the kernel file states none of them and stops
with ``#error`` if one is missing. The tests compile the file with the same
options through NVRTC (with CuPy's own options added), nvcc and as host C++.

Nothing here imports CuPy at import time: :class:`DeviceKernels` receives
the CuPy module from the backend.
"""

from __future__ import annotations

import importlib.resources
import threading
from pathlib import Path
from typing import Any

from gpudense.activation_math import ACTIVATION_NAMES, GELU_A, GELU_C, GELU_CLIP
from gpudense.backends.cuda.plan import BLOCK, UNROLL, VECTOR_BYTES, blocks_per_sm

#: The kernel file, inside the kernels directory.
KERNEL_FILE = "bias_grad.cu"
#: Entry-point suffix per element type's name: ``bias_grad_pass1_f32`` sums float32.
SUFFIX = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}
#: The kernel file's entry points (``extern "C"``): for every dtype both bias-gradient
#: passes, then per activation the fused gradient's pass 1 and the forward pass.
ENTRY_POINTS = tuple(
    [f"bias_grad_pass{p}_{s}" for p in (1, 2) for s in SUFFIX.values()]
    + [f"{kind}_{a}_{s}" for kind in ("act_bias_grad", "bias_act") for a in ACTIVATION_NAMES
       for s in SUFFIX.values()]
)

#: The repository root of a plain checkout (``gpudense/backends/cuda/`` is three levels down).
_REPO_ROOT = Path(__file__).resolve().parents[3]


def kernel_defines() -> tuple[str, ...]:
    """The ``-D`` compiler options that give the kernel the constants it shares with Python.

    ``kernels/bias_grad.cu`` uses ``GPUDENSE_BLOCK`` (threads per block,
    :data:`~gpudense.backends.cuda.plan.BLOCK`), ``GPUDENSE_UNROLL`` (rows
    loaded before the first add, :data:`~gpudense.backends.cuda.plan.UNROLL`),
    ``GPUDENSE_VECTOR_BYTES`` (bytes per vector load,
    :data:`~gpudense.backends.cuda.plan.VECTOR_BYTES`) and GELU's
    ``GPUDENSE_GELU_C``, ``GPUDENSE_GELU_A`` and ``GPUDENSE_GELU_CLIP``
    (:mod:`gpudense.activation_math`, written with ``repr``, which reads back
    as the same double) and defines none of them. NVRTC, nvcc and a host C++
    compiler all take these options.

    Returns:
        The options, e.g. ``("-DGPUDENSE_BLOCK=256", "-DGPUDENSE_UNROLL=4",
        "-DGPUDENSE_VECTOR_BYTES=16", "-DGPUDENSE_GELU_C=0.7978845608028654", ...)``.

    Example:
        >>> "-DGPUDENSE_BLOCK=256" in kernel_defines()
        True
    """
    return (
        f"-DGPUDENSE_BLOCK={BLOCK}",
        f"-DGPUDENSE_UNROLL={UNROLL}",
        f"-DGPUDENSE_VECTOR_BYTES={VECTOR_BYTES}",
        f"-DGPUDENSE_GELU_C={GELU_C!r}",
        f"-DGPUDENSE_GELU_A={GELU_A!r}",
        f"-DGPUDENSE_GELU_CLIP={GELU_CLIP!r}",
    )


#: NVRTC options for the kernel module: line info (free at run time; Nsight
#: Compute shows source lines) and the plan's constants.
NVRTC_OPTIONS = ("--generate-line-info", *kernel_defines())


class KernelBuildError(RuntimeError):
    """A kernel file could not be found or compiled; ``log`` holds the compiler's output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


def kernel_source(name: str = KERNEL_FILE) -> tuple[str, str]:
    """The text of kernel file ``name`` and the path it was read from.

    An installed gpudense ships its kernels as the package ``gpudense.kernels``
    and they are found through :mod:`importlib.resources`. From a plain
    checkout (``PYTHONPATH`` at the repository root, nothing installed) that
    package does not exist, and the file is read from ``<repo>/kernels/``
    next to the ``gpudense`` package.

    Args:
        name: File name inside the kernels directory, e.g. ``"bias_grad.cu"``.

    Returns:
        ``(source, path)``: the file's text and where it came from.

    Raises:
        KernelBuildError: the file is in neither place.

    Example:
        >>> src, path = kernel_source("bias_grad.cu")
        >>> "bias_grad_pass1_f32" in src
        True
    """
    tried = []
    try:
        resource = importlib.resources.files("gpudense.kernels").joinpath(name)
    except ModuleNotFoundError:
        resource = None
    if resource is not None:
        tried.append(str(resource))
        if resource.is_file():
            return resource.read_text(encoding="utf-8"), str(resource)
    path = _REPO_ROOT / "kernels" / name
    tried.append(str(path))
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    raise KernelBuildError(f"kernel source {name!r} not found; looked in: {', '.join(tried)}")


def _with_line_directive(source: str, path: str) -> str:
    """``source`` after ``#line 1 "path"``, so that compiler messages name the file."""
    quoted = Path(path).as_posix().replace("\\", "\\\\").replace('"', '\\"')
    return f'#line 1 "{quoted}"\n{source}'


class DeviceKernels:
    """The compiled kernels and launch facts of one device.

    Built with that device current. Attributes: ``path`` (the source file),
    ``functions`` (entry-point name to ``cupy.RawKernel``), ``n_sm`` (SMs on
    the device) and ``blocks_per_sm`` (entry-point name to resident blocks
    per SM, from the kernel's register count).

    Raises:
        KernelBuildError: the source is missing or NVRTC rejects it; the
            message and ``log`` carry NVRTC's log.
    """

    def __init__(self, cp: Any, device_id: int) -> None:
        from cupy.cuda.compiler import CompileException

        source, path = kernel_source(KERNEL_FILE)
        self.path = path
        try:
            module = cp.RawModule(code=_with_line_directive(source, path), options=NVRTC_OPTIONS)
            self.functions = {name: module.get_function(name) for name in ENTRY_POINTS}
        except CompileException as exc:
            log = exc.get_message()
            raise KernelBuildError(
                f"compiling {path} for device {device_id} with NVRTC failed:\n{log}", log
            ) from exc
        attrs = cp.cuda.Device(device_id).attributes
        self.n_sm = int(attrs["MultiProcessorCount"])
        self.blocks_per_sm = {
            name: blocks_per_sm(
                fn.num_regs,
                regs_per_sm=int(attrs["MaxRegistersPerMultiprocessor"]),
                threads_per_sm=int(attrs["MaxThreadsPerMultiProcessor"]),
            )
            for name, fn in self.functions.items()
        }


class KernelCache:
    """:class:`DeviceKernels` per device, each built on first use and then kept.

    The CuPy backend holds one cache, and the backend registry holds one
    backend per process: the module is compiled once per process and device.
    Safe to share between threads.
    """

    def __init__(self) -> None:
        self._built: dict[int, DeviceKernels] = {}
        self._lock = threading.Lock()

    def get(self, cp: Any, device_id: int) -> DeviceKernels:
        """The kernels of device ``device_id``, compiled there (with it current) on first use.

        Raises:
            KernelBuildError: see :class:`DeviceKernels`.
        """
        found = self._built.get(device_id)
        if found is not None:
            return found
        with self._lock:
            if device_id not in self._built:
                with cp.cuda.Device(device_id):
                    self._built[device_id] = DeviceKernels(cp, device_id)
            return self._built[device_id]
