"""Starting the environment's own ``mpiexec`` (MPICH from the ``distributed`` extra) from a test.

Each run has a time limit; a run that does not end within it is a hang: its
whole process group is killed and the test fails saying so. The fixture
``mpirun`` (tests/distributed/conftest.py) wraps :func:`launch` and :func:`finish`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

#: The mpiexec installed next to this Python (the mpich wheel puts it in the environment's bin/).
MPIEXEC = Path(sys.executable).parent / "mpiexec"
WORKER = Path(__file__).resolve().parent / "distributed" / "mpi_worker.py"

#: Launcher variables a test run must not inherit (the tests start their own launcher).
_LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                  "SLURM_STEP_NUM_TASKS")


class Finished(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def launch(args: list[str], *, timeout: float, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``mpiexec args...`` in its own process group, output piped."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    env["GPUDENSE_BACKEND"] = "numpy"  # no CuPy fallback warning on a machine with CuPy and no GPU
    return subprocess.Popen([str(MPIEXEC), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> Finished:
    """Wait for ``proc``; past ``timeout`` seconds kill its process group and fail the test (a hang)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec did not end within {timeout} s (a hang); stdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}")
    return Finished(proc.returncode, out, err)
