"""The command line: `gpudense info`, `python -m gpudense`, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


@pytest.mark.digits
def test_unavailable_backend_is_a_one_line_error(monkeypatch, capsys, fresh_backends):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["train", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gpudense train: error: CuPy is not installed") and err.count("\n") == 1


def _fake_command(monkeypatch, exc):
    """Register a subcommand whose run() raises exc."""
    import types

    from gpudense import cli

    module = types.ModuleType("gpudense_fake_command")
    module.add_arguments = lambda parser: None

    def run(args):
        raise exc

    module.run = run
    monkeypatch.setitem(sys.modules, "gpudense_fake_command", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("gpudense_fake_command", "raises"))


def test_missing_optional_package_is_a_one_line_error(monkeypatch, capsys):
    _fake_command(monkeypatch, ModuleNotFoundError("No module named 'tqdm'"))
    assert main(["fake"]) == 1
    err = capsys.readouterr().err
    assert err == "gpudense fake: error: No module named 'tqdm'; install it with pip install \"gpudense[test]\"\n"


def test_out_of_memory_is_a_one_line_error(monkeypatch, capsys):
    _fake_command(monkeypatch, MemoryError())
    assert main(["fake"]) == 1
    assert capsys.readouterr().err == "gpudense fake: error: out of memory; try smaller sizes\n"


def test_debug_variable_shows_the_traceback(monkeypatch):
    _fake_command(monkeypatch, ValueError("bad"))
    monkeypatch.setenv("GPUDENSE_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        main(["fake"])


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_debug_variable_off_keeps_the_one_line_error(monkeypatch, capsys, value):
    _fake_command(monkeypatch, ValueError("bad"))
    monkeypatch.setenv("GPUDENSE_DEBUG", value)
    assert main(["fake"]) == 1
    assert capsys.readouterr().err == "gpudense fake: error: bad\n"


@pytest.mark.parametrize("value", ["true", "YES", "on"])
def test_debug_variable_on_in_any_spelling_shows_the_traceback(monkeypatch, value):
    _fake_command(monkeypatch, ValueError("bad"))
    monkeypatch.setenv("GPUDENSE_DEBUG", value)
    with pytest.raises(ValueError, match="bad"):
        main(["fake"])


def test_debug_variable_of_another_value_is_an_error_before_the_command_runs(monkeypatch, capsys):
    _fake_command(monkeypatch, AssertionError("the command must not run"))
    monkeypatch.setenv("GPUDENSE_DEBUG", "2")
    assert main(["fake"]) == 2
    assert capsys.readouterr().err == ("gpudense: error: GPUDENSE_DEBUG='2' in the environment: expected 1, true, "
                                       "yes or on (on), or 0, false, no, off or empty (off)\n")
