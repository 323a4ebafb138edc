"""The ``gpudense`` command line: ``info``, ``train``, ``bench``.

Each subcommand lives in its own module, which exposes
``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when
that subcommand runs (or ``--help`` is asked of it), so ``gpudense info``
stays fast and needs no optional package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

#: subcommand -> (module, one-line help)
COMMANDS = {
    "info": ("gpudense.cli.info", "print the chosen backend, why, and library/device versions"),
    "train": ("gpudense.cli.train", "train an MLP (default: scikit-learn's bundled digits)"),
    "bench": ("gpudense.cli.bench", "time each stage against the hardware's ceilings and torch"),
}


class CliError(Exception):
    """An error to report to the user on one line, without a traceback."""


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    from gpudense import __version__

    parser = argparse.ArgumentParser(
        prog="gpudense",
        description="gpudense: a dense layer for CUDA GPUs (CuPy) with a NumPy fallback.",
    )
    parser.add_argument("--version", action="version", version=f"gpudense {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Only the subcommand being run imports its module (and registers its options).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            importlib.import_module(module_name).add_arguments(p)
            p.set_defaults(_module=module_name)
    return parser


def _error_line(text: str) -> None:
    """``text`` and its newline on stderr in one write, so that under mpiexec the lines of ranks do not mix."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Errors a user can act on (bad values, a missing file or optional package,
    an unavailable backend, memory) end with one line on stderr and status 1;
    ``GPUDENSE_DEBUG=1`` shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(argv)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        _error_line("gpudense: interrupted")
        return 130
    except ImportError as exc:
        if os.environ.get("GPUDENSE_DEBUG"):
            raise
        extra = {"train": "train", "bench": "bench"}.get(args.command, "test")
        _error_line(f'gpudense {args.command}: error: {exc}; install it with pip install "gpudense[{extra}]"')
        return 1
    except MemoryError:
        if os.environ.get("GPUDENSE_DEBUG"):
            raise
        _error_line(f"gpudense {args.command}: error: out of memory; try smaller sizes")
        return 1
    except (CliError, ValueError, TypeError, OSError, RuntimeError) as exc:
        if os.environ.get("GPUDENSE_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _error_line(f"gpudense {args.command}: error: {message}")
        return 1
