"""What the command line prints when things go wrong around it: a closed pipe, a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from gpudense import cli
from gpudense.cli import info as info_command


@pytest.mark.skipif(os.name != "posix", reason="POSIX pipes")
def test_a_closed_stdout_ends_quietly_as_sigpipe_would():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "gpudense", "info"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr == ""  # no "error: [Errno 32] Broken pipe", no "Exception ignored"
    assert proc.returncode == 141


def test_a_broken_pipe_in_process_is_quiet(monkeypatch, capsys):
    def collect():
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(info_command, "collect", collect)
    assert cli.main(["info"]) == 141
    assert capsys.readouterr().err == ""


def test_a_warning_is_one_line_without_a_python_file(monkeypatch, capsys):
    def collect():
        warnings.warn("gpudense: something worth knowing", RuntimeWarning)
        return {"backend": "numpy"}

    monkeypatch.setattr(info_command, "collect", collect)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["info"]) == 0
    err = capsys.readouterr().err
    assert err == "gpudense info: warning: something worth knowing\n"


@pytest.mark.digits
def test_the_cupy_fallback_warning_is_one_clean_line(monkeypatch, capsys, fresh_backends):
    import gpudense.backends as backends

    real_load = backends._load

    def load(name):
        if name == "cupy":
            exc = backends.BackendUnavailableError(
                "CuPy 14.2.0 is installed but no CUDA device is usable: no NVIDIA driver found")
            exc.cupy_installed = True
            raise exc
        return real_load(name)

    monkeypatch.setattr(backends, "_load", load)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert cli.main(["train", "--quiet", "--epochs", "0", "--hidden", "8"]) == 0
    err = capsys.readouterr().err
    assert err == ("gpudense train: warning: backend='auto' falls back to NumPy: CuPy 14.2.0 is installed "
                   "but no CUDA device is usable: no NVIDIA driver found\n")
