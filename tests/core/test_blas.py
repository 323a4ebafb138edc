"""OpenBLAS's idle spin: set by the ``gpudense`` command before NumPy loads OpenBLAS, never by ``import gpudense``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpudense import _blas
from gpudense.backends import get_backend


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != _blas.SPIN_VARIABLE}
    environ.update(env, GPUDENSE_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True)
    return out.stdout.strip()


REPORT = "from gpudense._blas import short_spin; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), short_spin())"
# the gpudense command: its main runs before any subcommand loads NumPy
COMMAND = ("import io, os, sys, contextlib\nfrom gpudense.cli import main\nbefore = 'numpy' in sys.modules\n"
           "with contextlib.redirect_stdout(io.StringIO()):\n    main(['info'])\n"
           "print(before, 'numpy' in sys.modules)\n")


def test_import_changes_nothing_in_the_environment():
    code = ("import os; before = dict(os.environ); import gpudense, gpudense.nn, gpudense.training, gpudense.saved; "
            "from gpudense import Dense; Dense(2, 2, backend='numpy'); print(dict(os.environ) == before)")
    assert _run(code) == "True"


def test_the_command_sets_a_short_spin_before_numpy_loads():
    assert _run(COMMAND + REPORT).splitlines() == ["False True", f"{_blas.SHORT_SPIN} True"]


def test_a_value_the_user_set_is_kept():
    assert _run(COMMAND + REPORT, OPENBLAS_THREAD_TIMEOUT="28").splitlines()[1] == "28 False"
    assert _run(COMMAND + REPORT, OPENBLAS_THREAD_TIMEOUT="10").splitlines()[1] == "10 True"


def test_nothing_is_set_once_numpy_is_loaded():
    """OpenBLAS read the environment when NumPy loaded it: a later value would not be what runs."""
    assert _run("import numpy\n" + COMMAND + REPORT).splitlines() == ["True True", "None False"]


def test_openblas_reads_it(tmp_path):
    """NumPy's OpenBLAS takes the variable (threadpoolctl still sees the same pools)."""
    pytest.importorskip("threadpoolctl")
    code = ("import gpudense, numpy, threadpoolctl; "
            "print(sorted(p['internal_api'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'))")
    assert "openblas" in _run(code)


def test_step_threads_follow_the_blas_pools_only_with_a_short_spin(monkeypatch):
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_limits

    numpy_backend = get_backend("numpy")
    monkeypatch.setenv(_blas.SPIN_VARIABLE, "18")  # short_spin reads it when asked
    with threadpool_limits(limits=2, user_api="blas"):
        assert _blas.step_threads(numpy_backend) == _blas.blas_thread_count() >= 1
    with threadpool_limits(limits=1, user_api="blas"):
        assert _blas.step_threads(numpy_backend) == 1
    monkeypatch.setenv(_blas.SPIN_VARIABLE, "28")
    with threadpool_limits(limits=2, user_api="blas"):
        assert _blas.step_threads(numpy_backend) == 1

    class Other:
        name = "cupy"

    monkeypatch.setenv(_blas.SPIN_VARIABLE, "18")
    assert _blas.step_threads(Other()) == 1


def test_gpudense_train_steps_on_the_threads_step_threads_gives(monkeypatch):
    pytest.importorskip("sklearn", reason="gpudense train's default data set, digits, comes from scikit-learn")
    from gpudense.cli import train as train_cli

    monkeypatch.setattr(train_cli, "step_threads", lambda backend: 3)
    args = train_cli.parse_args(["--backend", "numpy", "--epochs", "0", "--quiet"])
    with open(os.devnull, "w") as out:
        run = train_cli.train(args, out=out)
    assert run.optimizer.threads == 3
