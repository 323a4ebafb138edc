"""Shared fixtures. CuPy is never imported here: GPU tests import it themselves."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense.backends import _reset_for_tests


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)


@pytest.fixture
def fresh_backends(monkeypatch):
    """Forget the cached "auto" decision before and after a test that changes it."""
    monkeypatch.delenv("GPUDENSE_BACKEND", raising=False)
    _reset_for_tests()
    yield
    _reset_for_tests()
