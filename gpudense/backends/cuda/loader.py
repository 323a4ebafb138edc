"""The kernels' source, compiler options and compiled modules.

Three kernel files, each one family of kernels, each built into its own
module: ``kernels/bias_grad.cu`` (the bias gradient's two passes),
``kernels/act_bias_grad.cu`` (the fused activation gradient) and
``kernels/bias_act.cu`` (the forward pass's bias and activation); the code
they share lives in ``kernels/*.cuh``. A file is read as text
(:func:`kernel_source`), its ``#include "x.cuh"`` lines replaced by the
headers' text (:func:`module_code`: each header once, with ``#line``
directives, so that compiler messages name the file and line, and so that
CuPy's kernel cache, which keys on the code, sees a header's change), and
built with NVRTC through ``cupy.RawModule`` once per device
(:class:`KernelCache`). The constants the kernels share with Python (block
size, unroll depth and vector width from :mod:`gpudense.backends.cuda.plan`;
GELU's constants from :mod:`gpudense.activation_math`) are given to the
compiler as ``-D`` options by :func:`kernel_defines`; the kernel files state
none of them and stop with ``#error`` if one is missing. The tests compile
the files with the same options through NVRTC (with CuPy's own options
added), nvcc and as host C++.

Nothing here imports CuPy at import time: :class:`DeviceKernels` receives
the CuPy module from the backend.
"""

from __future__ import annotations

import importlib.resources
import re
import threading
from pathlib import Path
from typing import Any

from gpudense.activation_math import ACTIVATION_NAMES, GELU_A, GELU_C, GELU_CLIP
from gpudense.backends.cuda.plan import BLOCK, UNROLL, VECTOR_BYTES, blocks_per_sm

#: Entry-point suffix per element type's name: ``bias_grad_pass1_f32`` sums float32.
SUFFIX = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}
#: Each kernel file (inside the kernels directory) and its entry points (``extern "C"``):
#: for every dtype the bias gradient's two passes; per activation and dtype the fused
#: gradient's pass 1 (its pass 2 is the bias gradient's) and the forward pass.
KERNEL_FILES: dict[str, tuple[str, ...]] = {
    "bias_grad.cu": tuple(f"bias_grad_pass{p}_{s}" for p in (1, 2) for s in SUFFIX.values()),
    "act_bias_grad.cu": tuple(f"act_bias_grad_{a}_{s}" for a in ACTIVATION_NAMES for s in SUFFIX.values()),
    "bias_act.cu": tuple(f"bias_act_{a}_{s}" for a in ACTIVATION_NAMES for s in SUFFIX.values()),
}
#: Every entry point, of all kernel files.
ENTRY_POINTS = tuple(name for names in KERNEL_FILES.values() for name in names)

#: The repository root of a plain checkout (``gpudense/backends/cuda/`` is three levels down).
_REPO_ROOT = Path(__file__).resolve().parents[3]


def kernel_defines() -> tuple[str, ...]:
    """The ``-D`` compiler options that give the kernel the constants it shares with Python.

    The kernel files use ``GPUDENSE_BLOCK`` (threads per block,
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


def kernel_source(name: str) -> tuple[str, str]:
    """The text of kernel file ``name`` and the path it was read from.

    An installed gpudense ships its kernels as the package ``gpudense.kernels``
    and they are found through :mod:`importlib.resources`. From a plain
    checkout (``PYTHONPATH`` at the repository root, nothing installed) that
    package does not exist, and the file is read from ``<repo>/kernels/``
    next to the ``gpudense`` package.

    Args:
        name: File name inside the kernels directory, e.g. ``"bias_grad.cu"`` or
            ``"element_types.cuh"``.

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


def _quoted(path: str) -> str:
    return Path(path).as_posix().replace("\\", "\\\\").replace('"', '\\"')


def _with_line_directive(source: str, path: str) -> str:
    """``source`` after ``#line 1 "path"``, so that compiler messages name the file."""
    return f'#line 1 "{_quoted(path)}"\n{source}'


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+\.cuh)"[ \t]*$', re.M)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.M)


def module_code(name: str) -> tuple[str, str]:
    """The code NVRTC compiles for kernel file ``name``, and the file's path.

    The file's text after a ``#line`` directive, with every
    ``#include "x.cuh"`` replaced by the header's own text (its includes
    replaced in turn; each header once, its ``#pragma once`` dropped), each
    piece after a ``#line`` directive naming its file and line. The code
    holds every line that is compiled, so CuPy's kernel cache, which keys on
    the code and options, sees a change to a header.

    Raises:
        KernelBuildError: the file or a header it includes is missing.

    Example:
        >>> code, path = module_code("bias_grad.cu")
        >>> "#include" in code, "gpudense_store" in code, path.endswith("bias_grad.cu")
        (False, True, True)
    """
    seen: set[str] = set()

    def expand(file: str) -> str:
        source, path = kernel_source(file)
        source = _PRAGMA_ONCE.sub("", source)
        parts, last = [], 0
        for match in _INCLUDE.finditer(source):
            header = match.group(1)
            parts.append(source[last:match.start()])
            if header not in seen:
                seen.add(header)
                parts.append(expand(header))
            line = source.count("\n", 0, match.end()) + 2  # the line after the #include
            parts.append(f'#line {line} "{_quoted(path)}"')
            last = match.end()
        parts.append(source[last:])
        return _with_line_directive("".join(parts), path) + "\n"

    code = expand(name)
    return code, kernel_source(name)[1]


#: What to install where the compiler itself cannot be loaded or run.
_NVRTC_HINT = ("NVRTC (CUDA's run-time compiler) comes with the CUDA toolkit, or from pip: "
               "pip install 'gpudense[cuda13]' (or 'gpudense[cuda12]')")


class DeviceKernels:
    """The compiled kernels and launch facts of one device.

    Built with that device current: one module per kernel file. Attributes:
    ``paths`` (the source files), ``functions`` (entry-point name to
    ``cupy.RawKernel``), ``n_sm`` (SMs on the device) and ``blocks_per_sm``
    (entry-point name to resident blocks per SM, from the kernel's register
    count).

    Raises:
        KernelBuildError: a source is missing, NVRTC rejects it (the message
            and ``log`` carry NVRTC's log), or NVRTC itself cannot be loaded
            or run (the message says how to install it).
    """

    def __init__(self, cp: Any, device_id: int) -> None:
        from cupy.cuda.compiler import CompileException

        self.paths: list[str] = []
        self.functions: dict[str, Any] = {}
        for file, entry_points in KERNEL_FILES.items():
            code, path = module_code(file)
            self.paths.append(path)
            try:
                module = cp.RawModule(code=code, options=NVRTC_OPTIONS)
                self.functions.update({name: module.get_function(name) for name in entry_points})
            except CompileException as exc:
                log = exc.get_message()
                raise KernelBuildError(
                    f"compiling {path} for device {device_id} with NVRTC failed:\n{log}", log
                ) from exc
            except (RuntimeError, ImportError, OSError) as exc:  # NVRTC missing or broken, a CUDA error
                raise KernelBuildError(
                    f"building {path} for device {device_id} failed: {type(exc).__name__}: {exc}; {_NVRTC_HINT}",
                    str(exc),
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
