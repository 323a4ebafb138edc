"""Backend registry: backends are found by name and imported on first use.

A backend supplies the array module ``xp`` the core math is written against,
plus the few operations whose best implementation differs by device (the
bias-gradient reduction, the accumulating matrix product, NVTX ranges).

``import gpudense`` never imports CuPy: the CuPy backend's module is imported
only when ``get_backend("cupy")`` or ``get_backend("auto")`` asks for it.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from typing import Any

import numpy as np

import gpudense._env as _env
from gpudense._checks import array_kind
from gpudense.backends.base import Backend

__all__ = [
    "Backend",
    "BACKEND_NAMES",
    "BackendUnavailableError",
    "GpudenseFallbackWarning",
    "auto_backend_reason",
    "backend_name_of",
    "backend_of",
    "from_dlpack",
    "get_backend",
]

#: Names accepted by :func:`get_backend`.
BACKEND_NAMES = ("auto", "numpy", "cupy")

_MODULES = {
    "numpy": ("gpudense.backends.numpy_backend", "NumpyBackend"),
    "cupy": ("gpudense.backends.cuda", "CupyBackend"),
}

ENV_VAR = "GPUDENSE_BACKEND"

_lock = threading.Lock()
_instances: dict[str, Backend] = {}
_auto: tuple[str, str] | None = None  # (chosen name, reason)


class BackendUnavailableError(RuntimeError):
    """A backend that was asked for by name cannot be used here."""


class GpudenseFallbackWarning(RuntimeWarning):
    """``backend="auto"`` found CuPy installed but unusable and fell back to NumPy."""


def _check_name(name: Any, *, allow_auto: bool = True) -> str:
    if isinstance(name, Backend):
        return name.name
    if not isinstance(name, str):
        raise TypeError(
            f"backend must be a str, one of {BACKEND_NAMES}, or a Backend; got {type(name).__name__}"
        )
    key = name.strip().lower()
    names = BACKEND_NAMES if allow_auto else BACKEND_NAMES[1:]
    if key not in names:
        raise ValueError(f"unknown backend {name!r}; expected one of {names}")
    return key


def _load(name: str) -> Backend:
    """Import and instantiate backend ``name`` (not "auto"); raises if unusable."""
    backend = _instances.get(name)  # made already: no lock (a dict read is atomic)
    if backend is not None:
        return backend
    with _lock:
        if name in _instances:
            return _instances[name]
        module_name, class_name = _MODULES[name]
        module = importlib.import_module(module_name)
        backend = getattr(module, class_name)()  # raises BackendUnavailableError
        _instances[name] = backend
        return backend


def _choose_auto() -> tuple[str, str]:
    """Decide what "auto" means on this machine, once per process."""
    global _auto
    if _auto is not None:
        return _auto
    env = _env.backend()
    if env and env.lower() != "auto":
        try:
            name = _check_name(env, allow_auto=False)
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR}={env!r} in the environment: {exc}") from None
        _auto = (name, f"{ENV_VAR}={env} in the environment")
        return _auto
    try:
        _load("cupy")
    except BackendUnavailableError as exc:
        reason = f"CuPy backend unavailable ({exc}); using NumPy"
        if getattr(exc, "cupy_installed", False):
            warnings.warn(
                f"gpudense: backend='auto' falls back to NumPy: {exc}",
                GpudenseFallbackWarning,
                stacklevel=4,
            )
        _auto = ("numpy", reason)
    else:
        _auto = ("cupy", "CuPy imports and a CUDA device is usable")
    return _auto


def get_backend(name: str | Backend = "auto") -> Backend:
    """Return the backend called ``name``.

    Args:
        name: ``"numpy"``, ``"cupy"`` or ``"auto"`` (case-insensitive), or a
            :class:`Backend`, returned as it is. ``"auto"`` picks CuPy when it
            imports and a CUDA device is usable, else NumPy; the environment
            variable ``GPUDENSE_BACKEND`` (``numpy`` or ``cupy``) overrides it.
            The choice and its reason are made once per process and reported
            by :func:`auto_backend_reason` and ``gpudense info``.

    Returns:
        The backend, one instance per name and process.

    Raises:
        ValueError: ``name`` is not a known backend.
        BackendUnavailableError: ``"cupy"`` was asked for (by name or through
            ``GPUDENSE_BACKEND``) and CuPy or a CUDA device is missing; the
            message names the cause.

    Example:
        >>> get_backend("numpy").name
        'numpy'
    """
    if isinstance(name, Backend):
        return name
    key = _check_name(name)
    if key == "auto":
        key = _choose_auto()[0]
    return _load(key)


def auto_backend_reason() -> tuple[str, str]:
    """``(name, reason)``: what ``backend="auto"`` chose on this machine and why."""
    return _choose_auto()


def backend_of(*arrays: Any) -> Backend:
    """The backend that owns ``arrays`` (None entries are ignored).

    NumPy arrays belong to the NumPy backend and CuPy arrays to the CuPy
    backend. Mixing them is an error, never a silent copy.

    Raises:
        TypeError: an entry is not an array, or NumPy and CuPy arrays are mixed.
    """
    return _load(backend_name_of(*arrays))


def backend_name_of(*arrays: Any) -> str:
    """``"numpy"`` or ``"cupy"``: which backend's arrays these are, without importing CuPy.

    None entries are ignored; no arrays at all means ``"numpy"``.

    Raises:
        TypeError: an entry is not an array, or NumPy and CuPy arrays are mixed.
    """
    kinds: dict[str, str] = {}
    for a in arrays:
        if a is None:
            continue
        kind = array_kind(a)
        kinds.setdefault(kind, type(a).__module__ + "." + type(a).__name__)
    if len(kinds) > 1:
        got = ", ".join(sorted(kinds.values()))
        raise TypeError(
            "arrays must all live on one backend (all numpy.ndarray or all cupy.ndarray); "
            f"got a mix of {got}. Move them with Dense.to(...), cupy.asarray or cupy.asnumpy."
        )
    return next(iter(kinds), "numpy")


#: DLPack device types (``__dlpack_device__()[0]``) and the backend whose arrays live there.
_DLPACK_DEVICES = {1: "numpy", 2: "cupy", 13: "cupy"}  # kDLCPU, kDLCUDA, kDLCUDAManaged
_DLPACK_NAMES = {3: "CUDA host", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 10: "ROCm", 14: "oneAPI"}


def from_dlpack(*arrays: Any) -> tuple[Any, ...]:
    """Each argument as an array of a gpudense backend, foreign arrays taken through DLPack without a copy.

    NumPy and CuPy arrays and None pass unchanged. Any other object with
    ``__dlpack__`` (a PyTorch or JAX tensor, ...) becomes a NumPy array
    (``numpy.from_dlpack``) when it lives in host memory, or a CuPy array
    (``cupy.from_dlpack``, on the tensor's device) when it lives on a CUDA
    device; both views share its memory. Anything else passes unchanged, for
    the caller's own checks to refuse.

    Raises:
        TypeError: the array lives on a device gpudense has no backend for, or
            DLPack refuses it (an unsupported dtype such as a bfloat16 tensor
            on the CPU, a tensor that requires grad, ...); the message says which.
        BackendUnavailableError: a CUDA tensor, and the CuPy backend cannot be used.

    Example:
        >>> x = np.ones((2, 3), np.float32)
        >>> from_dlpack(x, None)[0] is x
        True
    """
    out = []
    for a in arrays:
        if a is None or isinstance(a, np.ndarray) or not hasattr(a, "__dlpack__"):
            out.append(a)
            continue
        module = type(a).__module__ or ""
        if module == "cupy" or module.startswith("cupy."):
            out.append(a)
            continue
        what = f"{module}.{type(a).__name__}"
        try:
            device_type, device_id = a.__dlpack_device__()
        except Exception as exc:
            raise TypeError(f"{what}: cannot ask its DLPack device ({exc})") from exc
        name = _DLPACK_DEVICES.get(int(device_type))
        if name is None:
            where = _DLPACK_NAMES.get(int(device_type), f"DLPack device type {int(device_type)}")
            raise TypeError(f"{what} lives on a {where} device; gpudense takes arrays in host memory "
                            "(NumPy backend) or on a CUDA device (CuPy backend)")
        xp = np if name == "numpy" else get_backend("cupy").xp
        try:
            if name == "numpy":
                out.append(np.from_dlpack(a))
            else:
                with xp.cuda.Device(int(device_id)):
                    out.append(xp.from_dlpack(a))
        except (BufferError, TypeError, ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = ("; gpudense takes float16, float32 and float64 through DLPack (bfloat16 as NumPy or CuPy "
                    "arrays only)") if "type" in reason.lower() else ""
            raise TypeError(f"{what} of dtype {getattr(a, 'dtype', '?')} cannot be taken through DLPack without a "
                            f"copy: {reason}{hint}") from exc
    return tuple(out)

