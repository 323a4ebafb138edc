"""``run_cli(argv, capsys)``: the command line run in-process, for the CLI tests."""

from __future__ import annotations

from gpudense import cli


def run_cli(argv, capsys):
    """``gpudense <argv>`` in-process: (exit status, stdout, stderr); argparse's exit included."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
