"""The CuPy (CUDA) backend.

Imported only when asked for: ``get_backend("cupy")`` or ``"auto"``.
"""

from __future__ import annotations

from typing import Any

from gpudense.backends import BackendUnavailableError
from gpudense.backends.base import Backend


def _unavailable(message: str, *, cupy_installed: bool) -> BackendUnavailableError:
    exc = BackendUnavailableError(message)
    exc.cupy_installed = cupy_installed  # type: ignore[attr-defined]
    return exc


def _import_cupy() -> Any:
    """Import CuPy and check that a CUDA device is usable; raise with the cause."""
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
            f"CuPy {cupy.__version__} is installed but no CUDA device is usable: {exc}",
            cupy_installed=True,
        ) from exc
    if count < 1:
        raise _unavailable(
            f"CuPy {cupy.__version__} is installed but the CUDA runtime reports no device",
            cupy_installed=True,
        )
    return cupy


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self) -> None:
        self.xp = _import_cupy()

    def bias_grad(self, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        cp = self.xp
        acc = cp.float32 if dy.dtype == cp.float16 else dy.dtype
        db = dy.sum(axis=0, dtype=acc)
        if out is None:
            return db.astype(dy.dtype, copy=False)
        if accumulate:
            db += out
        out[...] = db
        return out

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> Any:
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def describe(self) -> dict[str, str]:
        cp = self.xp
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        if isinstance(name, bytes):
            name = name.decode()
        return {
            "cupy": cp.__version__,
            "cuda_runtime": str(cp.cuda.runtime.runtimeGetVersion()),
            "cuda_driver": str(cp.cuda.runtime.driverGetVersion()),
            "device": f"{dev.id}: {name} (sm_{props['major']}{props['minor']})",
        }
