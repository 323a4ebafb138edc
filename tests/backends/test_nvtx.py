"""NVTX ranges: the provider is chosen once; a shared no-op where none exists."""

from __future__ import annotations

import sys

import pytest

from gpudense.backends import get_backend


@pytest.fixture
def fresh_nvtx(monkeypatch):
    """The NVTX provider not chosen yet (chosen again in the test); the process's own comes back after it."""
    from gpudense import _nvtx

    monkeypatch.setattr(_nvtx, "_chosen", None)
    return _nvtx


def test_nvtx_uses_the_nvtx_package_when_present(fresh_nvtx, monkeypatch):
    calls = []
    fake = type(sys)("nvtx")
    fake.push_range = lambda message: calls.append(("push", message))
    fake.pop_range = lambda: calls.append(("pop",))
    fake.__version__ = "9.9"
    monkeypatch.setitem(sys.modules, "nvtx", fake)
    with fresh_nvtx.nvtx_range("gpudense.backward.db"):
        calls.append(("body",))
    assert calls == [("push", "gpudense.backward.db"), ("body",), ("pop",)]
    assert fresh_nvtx.nvtx_provider() == "nvtx package 9.9"


def test_nvtx_is_a_shared_no_op_when_nothing_is_there(fresh_nvtx, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", None)  # import nvtx -> ImportError
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setitem(sys.modules, "cupy.cuda", None)
    first = fresh_nvtx.nvtx_range("a")
    assert first is fresh_nvtx.nvtx_range("b")
    with first:
        pass
    assert fresh_nvtx.nvtx_provider() == "none"


def test_nvtx_is_chosen_once(fresh_nvtx, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", None)
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setitem(sys.modules, "cupy.cuda", None)
    assert fresh_nvtx.nvtx_provider() == "none"
    fake = type(sys)("nvtx")
    fake.push_range = fake.pop_range = lambda *a: None
    monkeypatch.setitem(sys.modules, "nvtx", fake)
    assert fresh_nvtx.nvtx_provider() == "none"  # not re-probed


def test_numpy_backend_range_is_a_no_op():
    with get_backend("numpy").nvtx_range("gpudense.forward"):
        pass
