"""The ``mpirun`` fixture: run the environment's own ``mpiexec`` to its end, within a time limit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mpi_launch import MPIEXEC, Finished, finish, launch


@pytest.fixture
def mpirun():
    """``mpirun(args, timeout=60, cwd=None) -> Finished``: run ``mpiexec args``; skips without mpiexec."""
    if not MPIEXEC.exists():
        pytest.skip(f"needs mpiexec next to {sys.executable}: pip install 'gpudense[distributed]'")

    def run(args: list[str], *, timeout: float = 60, cwd: Path | None = None) -> Finished:
        return finish(launch(args, timeout=timeout, cwd=cwd), timeout)

    return run
