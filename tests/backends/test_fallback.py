"""Backend selection where CuPy may be installed but no CUDA device is usable (the CI machine)."""

from __future__ import annotations

import importlib.util
import warnings

import pytest

from gpudense.backends import (
    BackendUnavailableError,
    GpudenseFallbackWarning,
    auto_backend_reason,
    get_backend,
)


def _cupy_installed():
    return importlib.util.find_spec("cupy") is not None


@pytest.mark.no_gpu
def test_auto_falls_back_to_numpy_and_says_why_once(fresh_backends):
    installed = _cupy_installed()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = get_backend("auto")
        again = get_backend("auto")
    assert backend.name == "numpy" and again is backend
    name, reason = auto_backend_reason()
    assert name == "numpy"
    fallback = [w for w in caught if issubclass(w.category, GpudenseFallbackWarning)]
    if installed:
        assert "no CUDA device is usable" in reason or "reports no device" in reason, reason
        assert len(fallback) == 1, [str(w.message) for w in caught]
        assert "falls back to NumPy" in str(fallback[0].message)
    else:
        assert "CuPy is not installed" in reason
        assert fallback == []


@pytest.mark.no_gpu
def test_cupy_by_name_raises_naming_the_cause(fresh_backends):
    installed = _cupy_installed()
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("cupy")
    message = str(info.value)
    if installed:
        import cupy

        assert f"CuPy {cupy.__version__} is installed but" in message
    else:
        assert "CuPy is not installed" in message


@pytest.mark.no_gpu
def test_env_var_cupy_raises_too(fresh_backends, monkeypatch):
    monkeypatch.setenv("GPUDENSE_BACKEND", "cupy")
    with pytest.raises(BackendUnavailableError):
        get_backend("auto")
