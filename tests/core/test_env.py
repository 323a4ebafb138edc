"""The environment variables gpudense reads: booleans parsed as users expect, everything read when needed."""

from __future__ import annotations

import pathlib
import re

import pytest

from gpudense import _env

ON = ["1", "true", "TRUE", "Yes", "on", " On "]
OFF = ["0", "false", "False", "no", "NO", "off", "", "  "]


@pytest.mark.parametrize("value", ON)
def test_booleans_on(value):
    assert _env.flag("GPUDENSE_DEBUG", {"GPUDENSE_DEBUG": value}) is True


@pytest.mark.parametrize("value", OFF)
def test_booleans_off(value):
    assert _env.flag("GPUDENSE_DEBUG", {"GPUDENSE_DEBUG": value}) is False


def test_an_unset_boolean_is_off():
    assert _env.flag("GPUDENSE_DEBUG", {}) is False


@pytest.mark.parametrize("value", ["2", "maybe", "y", "enable", "-1"])
def test_any_other_value_is_an_error_naming_the_variable_and_the_values(value):
    with pytest.raises(ValueError, match=re.escape(f"GPUDENSE_CHECK_SAVED={value!r} in the environment: expected "
                                                   "1, true, yes or on (on), or 0, false, no, off or empty (off)")):
        _env.flag("GPUDENSE_CHECK_SAVED", {"GPUDENSE_CHECK_SAVED": value})


@pytest.mark.parametrize("value, want", [("", None), ("1", True), ("true", True), ("0", False), ("off", False)])
def test_mpi_cuda_aware_is_unset_or_a_boolean(monkeypatch, value, want):
    monkeypatch.setenv("GPUDENSE_MPI_CUDA_AWARE", value)
    assert _env.mpi_cuda_aware() is want


def test_mpi_cuda_aware_of_another_value_is_an_error(monkeypatch):
    monkeypatch.setenv("GPUDENSE_MPI_CUDA_AWARE", "auto")
    with pytest.raises(ValueError, match="GPUDENSE_MPI_CUDA_AWARE='auto' in the environment"):
        _env.mpi_cuda_aware()


def test_every_variable_is_read_in_one_module_only():
    """No module of the package but _env reads os.environ or os.getenv (the CLI's main alone sets one)."""
    root = pathlib.Path(_env.__file__).parent
    readers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if p.name != "_env.py" and re.search(r"os\.environ\.get|os\.getenv|os\.environ\[", p.read_text()))
    assert readers == []


def test_every_variable_is_in_the_docs_table():
    doc = (pathlib.Path(_env.__file__).parents[1] / "docs" / "environment.md").read_text()
    names = [_env.BACKEND, _env.CHECK_SAVED, _env.DEBUG, _env.MPI_CUDA_AWARE, _env.CUPY_TF32,
             _env.OPENBLAS_THREAD_TIMEOUT, *_env.LAUNCHER_SIZE_VARS]
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)`", doc, flags=re.M))
    assert set(names) <= rows
