"""The command line: `gpudense info`, `python -m gpudense`, errors."""

from __future__ import annotations

import subprocess
import sys

from gpudense.cli import main


def test_info_prints_backend_reason_and_versions(capsys, fresh_backends, monkeypatch):
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["backend"] == "numpy"
    assert "GPUDENSE_BACKEND=numpy" in lines["reason"]
    for key in ["gpudense", "python", "numpy", "cupy", "cpu"]:
        assert key in lines


def test_python_dash_m_info():
    out = subprocess.run([sys.executable, "-m", "gpudense", "info"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[0] == "backend"


def test_unknown_command_is_a_one_line_usage_error():
    out = subprocess.run([sys.executable, "-m", "gpudense", "bogus"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice: 'bogus'" in out.stderr and "Traceback" not in out.stderr


def test_unavailable_backend_is_a_one_line_error(monkeypatch, capsys, fresh_backends):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["train", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gpudense train: error: CuPy is not installed") and err.count("\n") == 1
