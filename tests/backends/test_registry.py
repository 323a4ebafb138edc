"""Backend registry: names, "auto", the environment variable, lazy CuPy import."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import gpudense
from gpudense import BackendUnavailableError, get_backend
from gpudense.backends import auto_backend_reason, backend_of


def test_numpy_by_name_and_case_insensitive():
    be = get_backend("numpy")
    assert be.name == "numpy" and be.xp is np
    assert get_backend(" NumPy ") is be
    assert get_backend(be) is be
    assert backend_of(np.ones(2), None) is be


def test_env_var_overrides_auto(fresh_backends, monkeypatch):
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    assert get_backend("auto").name == "numpy"
    name, reason = auto_backend_reason()
    assert name == "numpy" and "GPUDENSE_BACKEND=numpy" in reason


def test_env_var_with_unknown_name_is_an_error(fresh_backends, monkeypatch):
    monkeypatch.setenv("GPUDENSE_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"GPUDENSE_BACKEND='tpu' in the environment: unknown backend 'tpu'"):
        get_backend("auto")


def test_auto_without_cupy_picks_numpy_quietly(fresh_backends, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CuPy simply absent is no reason to warn
        assert get_backend().name == "numpy"
    name, reason = auto_backend_reason()
    assert name == "numpy" and "CuPy is not installed" in reason


def test_cupy_by_name_without_cupy_raises_naming_the_cause(fresh_backends, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match=r"CuPy is not installed.*gpudense\[cuda12\]"):
        get_backend("cupy")


def test_import_is_lazy():
    """``import gpudense`` loads NumPy and gpudense's own modules only: no CuPy, and none of the
    optional packages (its time is measured in bench/, not asserted here)."""
    heavy = ["cupy", "cupyx", "nvtx", "sklearn", "matplotlib", "tqdm", "threadpoolctl", "torch", "mpi4py",
             "ml_dtypes"]
    code = f"import sys, gpudense; print(*[m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def test_public_api():
    for name in ["Dense", "DenseGrads", "dense_forward", "dense_backward", "get_backend", "__version__"]:
        assert hasattr(gpudense, name)
