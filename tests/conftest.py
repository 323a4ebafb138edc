"""Shared fixtures and the one rule that decides whether GPU tests run.

CuPy is never imported at module level here. A test that needs a CUDA device
carries the ``gpu`` marker (directly, or through the ``cupy`` parameter of the
``xp`` / ``backend`` fixtures); it is skipped, with the reason the CuPy
backend gives, where that backend cannot be used. A test that needs *no*
usable device (the CPU-fallback checks) carries ``no_gpu``. A test that loads
scikit-learn's digits (``gpudense train``'s default data set) carries
``digits``; it is skipped where scikit-learn is not installed.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest

import gpudense.backends
from gpudense.backends import BackendUnavailableError, get_backend


@functools.lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    """Why the CuPy backend cannot run here (None when it can); asked once per session."""
    try:
        get_backend("cupy")
    except BackendUnavailableError as exc:
        return f"needs a usable CUDA device and CuPy: {exc}"
    return None


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("sklearn") is None:
        for item in items:
            if item.get_closest_marker("digits"):
                item.add_marker(pytest.mark.skip(reason="needs scikit-learn for the digits data set: "
                                                        "pip install 'gpudense[train]'"))
    needs_gpu = [item for item in items if item.get_closest_marker("gpu")]
    needs_none = [item for item in items if item.get_closest_marker("no_gpu")]
    if not needs_gpu and not needs_none:
        return
    reason = gpu_unavailable_reason()
    for item in needs_gpu:
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
    for item in needs_none:
        if reason is None:
            item.add_marker(pytest.mark.skip(reason="a CUDA device is usable here; this test needs none"))


BACKEND_PARAMS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Each backend in turn: NumPy always, CuPy where a device is usable (else skipped)."""
    return get_backend(request.param)


@pytest.fixture
def xp(backend):
    """The array module of each backend in turn (``numpy``, then ``cupy``)."""
    return backend.xp


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)


@pytest.fixture
def fresh_backends(monkeypatch):
    """No cached backends and no "auto" decision during the test; the process's own come back after it."""
    monkeypatch.delenv("GPUDENSE_BACKEND", raising=False)
    monkeypatch.setattr(gpudense.backends, "_instances", {})
    monkeypatch.setattr(gpudense.backends, "_auto", None)


@pytest.fixture
def nvtx_ranges(monkeypatch):
    """The names of the NVTX ranges the NumPy backend opens during the test, in order."""
    import contextlib

    from gpudense.backends.numpy_backend import NumpyBackend

    names = []

    def recording_range(self, name):
        names.append(name)
        return contextlib.nullcontext()

    monkeypatch.setattr(NumpyBackend, "nvtx_range", recording_range)
    return names
