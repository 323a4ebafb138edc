"""The machine facts ``gpudense info`` prints (and the benchmarks record): versions, the backend "auto" picks and why.

A library module: it imports neither the package face (``gpudense``'s
``__init__``) nor the command line; ``gpudense info`` prints what
:func:`collect` returns.
"""

from __future__ import annotations

import importlib.metadata
import platform
import warnings

import numpy as np

__all__ = ["collect"]


def collect() -> dict[str, str]:
    """The facts ``gpudense info`` prints, as a dict (also used by the benchmarks).

    Versions of gpudense, Python, NumPy and the platform; which backend
    ``"auto"`` picks and why; CuPy's and CUDA's versions (from
    :func:`gpudense.backends.cuda.library_facts`, which needs no device) and,
    where CuPy is installed, each CUDA library its GPU path loads, found or
    missing with the ``pip install`` that brings it
    (:func:`gpudense.backends.cuda.libraries.cuda_libraries`); then the
    chosen backend's own facts (:meth:`~gpudense.backends.Backend.describe`:
    the CPU, or the CUDA device).

    Returns:
        An ordered ``{name: value}`` dict of strings.

    Example:
        >>> facts = collect()
        >>> facts["backend"] in ("numpy", "cupy")
        True
    """
    from gpudense.backends import GpudenseFallbackWarning, auto_backend_reason, get_backend
    from gpudense.backends.cuda import library_facts

    with warnings.catch_warnings():  # the reason is printed below; no need to warn too
        warnings.simplefilter("ignore", GpudenseFallbackWarning)
        name, reason = auto_backend_reason()
    facts = {
        "gpudense": _version(),
        "backend": name,
        "reason": reason,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    facts.update(library_facts())  # reported whichever backend was chosen
    facts.update(_library_lines())
    facts.update(get_backend(name).describe())
    return facts


def _version() -> str:
    """gpudense's version, from its installed metadata."""
    try:
        return importlib.metadata.version("gpudense")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed; pip install -e . records it)"


def _library_lines() -> dict[str, str]:
    """``{library: line}`` for each CUDA library CuPy's GPU path loads; empty where CuPy is not installed."""
    try:
        import cupy
    except ImportError:
        return {}
    from gpudense.backends.cuda.libraries import cuda_libraries

    try:
        major, libs = cuda_libraries(cupy)
    except Exception as exc:  # a CUDA install too broken to report: say so, don't fail
        return {"cuda_libraries": f"unknown ({exc})"}
    return {lib.name: lib.line(major) for lib in libs}
