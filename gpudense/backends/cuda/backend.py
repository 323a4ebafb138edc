"""The CuPy backend: the CuPy import check, library facts and the backend hooks.

:class:`CupyBackend` implements the backend hooks on CuPy's current stream:
the products through cuBLAS (:meth:`~CupyBackend.matmul`,
:meth:`~CupyBackend.matmul_acc`), and the bias gradient, the forward pass's
bias and activation and the fused activation gradient through the kernels of
``kernels/*.cu`` (:meth:`~CupyBackend.bias_grad`,
:meth:`~CupyBackend.bias_act`, :meth:`~CupyBackend.act_bias_grad`), launched
by :mod:`gpudense.backends.cuda.launch` as :mod:`gpudense.backends.cuda.plan`
says, with the module :mod:`gpudense.backends.cuda.loader` builds.
:func:`library_facts` reports CuPy's and CUDA's versions for ``gpudense info``
without needing a device (or CuPy).

Nothing here imports CuPy at import time; :class:`CupyBackend` does when it
is created (``get_backend("cupy")`` or ``"auto"``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, ContextManager

import gpudense._env as _env
from gpudense._nvtx import nvtx_provider, nvtx_range
from gpudense.backends import BackendUnavailableError
from gpudense.backends.base import Backend
from gpudense.backends.cuda.launch import launch_act_bias_grad, launch_bias_act, launch_bias_grad
from gpudense.backends.cuda.libraries import missing_libraries
from gpudense.backends.cuda.loader import DeviceKernels, KernelCache
from gpudense.backends.cuda.optim_kernels import OptimizerKernels


def _unavailable(message: str, *, cupy_installed: bool) -> BackendUnavailableError:
    exc = BackendUnavailableError(message)
    exc.cupy_installed = cupy_installed  # type: ignore[attr-defined]
    return exc


def _import_cupy() -> Any:
    """Import CuPy and check that a CUDA device is usable; raise with the cause.

    Where CuPy is installed but not yet imported and the NVIDIA driver's
    library cannot be loaded, no device can be usable: that is said without
    importing CuPy, which takes about a tenth of a second (``backend="auto"``
    asks on every start of ``gpudense train``).
    """
    if "cupy" not in sys.modules and _no_driver_library():
        version = _installed_cupy_version()
        if version is not None:
            raise _unavailable(f"CuPy {version} is installed but no CUDA device is usable: {_NO_DRIVER}",
                               cupy_installed=True)
    try:
        import cupy
    except ImportError as exc:
        raise _unavailable(
            f"CuPy is not installed ({exc}); install gpudense[cuda12] or gpudense[cuda13]",
            cupy_installed=False,
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing driver library, ...
        raise _unavailable(
            f"CuPy {cupy.__version__} is installed but no CUDA device is usable: {_why_no_device(cupy, exc)}",
            cupy_installed=True,
        ) from exc
    if count < 1:
        raise _unavailable(
            f"CuPy {cupy.__version__} is installed but the CUDA runtime reports no device",
            cupy_installed=True,
        )
    missing = missing_libraries(cupy)  # cuBLAS, NVRTC, ...: said here, not at the first product
    if missing is not None:
        raise _unavailable(f"CuPy {cupy.__version__} is installed but {missing}", cupy_installed=True)
    return cupy


_NO_DRIVER = "no NVIDIA driver found (libcuda cannot be loaded); install the NVIDIA driver, or use the numpy backend"


def _no_driver_library() -> bool:
    """Whether the NVIDIA driver's library (libcuda on Linux, nvcuda.dll on Windows) cannot be loaded."""
    if sys.platform.startswith("linux"):
        names = ("libcuda.so.1", "libcuda.so")
    elif sys.platform == "win32":
        names = ("nvcuda.dll",)
    else:  # no NVIDIA driver library to look for: CuPy tells
        return False
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return False
    return True


def _installed_cupy_version() -> str | None:
    """CuPy's version read from its package without importing it; None where CuPy is not installed."""
    spec = importlib.util.find_spec("cupy")
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        try:
            text = (Path(folder) / "_version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
        if m:
            return m.group(1)
    return "(version unknown)"


def _why_no_device(cupy: Any, exc: Exception) -> str:
    """Why the CUDA runtime found no device, in words: no driver at all, a driver too old, or CuPy's own.

    Without any NVIDIA driver the runtime says "CUDA driver version is
    insufficient", as for an old one; its driver version (0 where no driver
    library, libcuda, can be loaded) tells the two apart.
    """
    try:
        driver = cupy.cuda.runtime.driverGetVersion()
        runtime = cupy.cuda.runtime.runtimeGetVersion()
    except Exception:  # a CUDA install too broken to answer: CuPy's words are all there is
        return str(exc)
    if driver == 0:
        return _NO_DRIVER
    if driver < runtime:
        return (
            f"the NVIDIA driver supports CUDA up to {_cuda_version(driver)} but this CuPy needs CUDA "
            f"{_cuda_version(runtime)}; update the driver, or install a CuPy built for CUDA {driver // 1000}"
        )
    return str(exc)


def library_facts() -> dict[str, str]:
    """CuPy's version and the CUDA runtime and driver versions, as ``gpudense info`` prints them.

    Imports CuPy (if it is installed) but needs no device: on a machine
    without CuPy the answer is ``{"cupy": "not installed"}``, and without an
    NVIDIA driver ``cuda_driver`` says so. A CUDA installation too broken to
    answer is reported in ``cuda_runtime``, not raised.

    Returns:
        ``{"cupy": ..., "cuda_runtime": ..., "cuda_driver": ...}``; the CUDA
        keys only where CuPy is installed (``cuda_driver`` only where the
        runtime answered).

    Example:
        >>> "cupy" in library_facts()  # "not installed" or its version
        True
    """
    try:
        import cupy
    except ImportError:
        return {"cupy": "not installed"}
    facts = {"cupy": cupy.__version__}
    try:
        facts["cuda_runtime"] = _cuda_version(cupy.cuda.runtime.runtimeGetVersion())
        driver = cupy.cuda.runtime.driverGetVersion()
        facts["cuda_driver"] = _cuda_version(driver) if driver else "none (no NVIDIA driver)"
    except Exception as exc:  # a broken CUDA install: report it, don't fail
        facts["cuda_runtime"] = f"unknown ({exc})"
    return facts


def _cuda_version(v: int) -> str:
    """CUDA's integer version 13020 as "13.2"."""
    return f"{v // 1000}.{v % 1000 // 10}"


class CupyBackend(Backend):
    """CuPy arrays on the current CUDA device; cuBLAS products and the bias-gradient RawKernel.

    Everything is issued on CuPy's current stream. The kernel module is built
    once per process and device, on the first bias gradient there.
    """

    name = "cupy"

    def __init__(self) -> None:
        self.xp = _import_cupy()
        # CuPy reads CUPY_TF32 once, at import; so do we (see matmul_acc).
        self._tf32 = _env.cupy_tf32()
        self._kernels = KernelCache()
        self._optimizer_kernels = OptimizerKernels(self.xp)

    # -- kernels -----------------------------------------------------------

    def kernels(self, device_id: int | None = None) -> DeviceKernels:
        """The compiled kernels of ``device_id`` (default: current device); built on first use.

        Raises:
            KernelBuildError: the source is missing or does not compile (the
                message carries NVRTC's log).
        """
        cp = self.xp
        if device_id is None:
            device_id = cp.cuda.runtime.getDevice()
        return self._kernels.get(cp, device_id)

    # -- the Backend interface ---------------------------------------------

    def matmul_acc(self, a: Any, b: Any, out: Any) -> Any:
        """``out += a @ b`` through cuBLAS; returns ``out``.

        For float32 and float64 this is one GEMM with ``beta = 1``
        (``cupy.cublas.gemm``): no temporary and no extra pass over ``out``.
        float16 (which ``cupy.cublas.gemm`` does not take) and sizes past
        cuBLAS's 32-bit limits use ``out += a @ b``, and so does float32
        under ``CUPY_TF32=1``: ``cupy.cublas.gemm`` always computes in full
        float32, while ``cupy.matmul`` follows ``CUPY_TF32``, and every
        product of one run must be computed alike.
        """
        cp = self.xp
        if a.shape[1] == 0 or out.size == 0:  # empty batch, or nothing to write (cuBLAS refuses ld = 0)
            return out
        limit = 2**31 - 1
        if (
            (out.dtype == cp.float64 or (out.dtype == cp.float32 and not self._tf32))
            and a.dtype == out.dtype == b.dtype
            and max(a.shape + b.shape) <= limit
            and (out.flags.c_contiguous or out.flags.f_contiguous)
        ):
            import cupy.cublas

            return cupy.cublas.gemm("N", "N", a, b, out=out, alpha=1.0, beta=1.0)
        out += cp.matmul(a, b)
        return out

    def bias_grad(self, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        """Column sums of ``dy`` (batch, m) through the deterministic two-pass kernel.

        ``dy`` is used in place when its rows are unit-stride (any row pitch,
        any alignment to its itemsize); otherwise one contiguous copy is made.
        float16 and bfloat16 are summed in float32 and rounded once, also when
        accumulating (``out = round(out + sum)``).

        Args:
            dy: CuPy array ``(batch, m)``, float16, bfloat16, float32 or
                float64; ``batch`` may be 0.
            out: Optional C-contiguous ``(m,)`` array of ``dy``'s dtype.
            accumulate: ``out += sum`` instead of ``out = sum`` (needs ``out``).

        Returns:
            ``out``, or a new ``(m,)`` array.
        """
        with dy.device:
            return launch_bias_grad(self.xp, self.kernels(dy.device.id), dy, out, accumulate=accumulate)

    def bias_act(self, z: Any, b: Any, activation: str) -> tuple[Any, Any]:
        """``y = act(z + b)`` in one kernel pass over the fresh product ``z``; see :meth:`Backend.bias_act`."""
        with z.device:
            return launch_bias_act(self.xp, self.kernels(z.device.id), z, b, activation)

    def act_bias_grad(self, dy: Any, saved: Any, activation: str, out: Any = None, *,
                      accumulate: bool = False, bias: bool = True) -> tuple[Any, Any]:
        """``dz`` and ``db`` in one fused kernel pass (and pass 2 when split); see :meth:`Backend.act_bias_grad`.

        ``db`` is the sum of ``dz`` as stored, in the order of :meth:`bias_grad`'s
        plan for the fused kernel: deterministic, float32 for 16-bit types.
        """
        with dy.device:
            return launch_act_bias_grad(self.xp, self.kernels(dy.device.id), dy, saved, activation, out,
                                        accumulate=accumulate, bias=bias)

    def optimizer_update(self, rule: str, *, w: Any, g: Any, state: dict[str, Any], p_low: Any,
                         scalars: dict[str, Any]) -> bool:
        """One optimizer step over flat arrays as one ``ElementwiseKernel`` (see :mod:`.optim_kernels`)."""
        return self._optimizer_kernels.update(rule, w=w, g=g, state=state, p_low=p_low, scalars=scalars)

    def nvtx_range(self, name: str) -> ContextManager[None]:
        """An NVTX range (``nvtx`` package, else ``cupy.cuda.nvtx``, else a no-op)."""
        return nvtx_range(name)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> Any:
        return self.xp.asnumpy(a)

    def stream_batches(self, x: Any, y: Any, order: Any, batch_size: int) -> Any:
        """Host rows uploaded through pinned buffers on a second stream (:mod:`.streaming`)."""
        from gpudense.backends.cuda.streaming import stream_batches

        return stream_batches(self.xp, x, y, order, batch_size)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def describe(self) -> dict[str, str]:
        """The current device (id, name, compute capability, SMs) and the NVTX provider.

        CuPy's and CUDA's versions are :func:`library_facts`; ``gpudense info``
        prints both.
        """
        cp = self.xp
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        if isinstance(name, bytes):
            name = name.decode()
        return {
            "device": f"{dev.id}: {name} (sm_{props['major']}{props['minor']}, "
                      f"{props['multiProcessorCount']} SMs)",
            "nvtx": nvtx_provider(),
        }
