"""The CLI tests' own fixtures."""

from __future__ import annotations

import pytest

from gpudense.benchmark import machine


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """``gpudense bench`` warns on a busy machine; what the tests read must not depend on the machine's load."""
    monkeypatch.setattr(machine, "busy_warning", lambda: None)
