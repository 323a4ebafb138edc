"""The ``gpudense`` command line: ``info``, ``train``, ``bench``, ``evaluate``, ``predict``, ``export``, ``import``.

Each subcommand lives in its own module, which exposes
``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when
that subcommand runs (or ``--help`` is asked of it), so ``gpudense info``
stays fast and needs no optional package.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
import warnings
from typing import Any, Iterator, Sequence

import gpudense._env as _env
from gpudense._blas import shorten_openblas_spin

#: subcommand -> (module, one-line help)
COMMANDS = {
    "info": ("gpudense.cli.info", "print the chosen backend, why, and library/device versions"),
    "train": ("gpudense.cli.train", "train an MLP (default: scikit-learn's bundled digits)"),
    "bench": ("gpudense.cli.bench", "time each stage against the hardware's ceilings and torch"),
    "evaluate": ("gpudense.cli.evaluate", "a checkpoint's loss, accuracy and per-class counts on your data"),
    "predict": ("gpudense.cli.predict", "a checkpoint's predictions for your data, written to a .npy"),
    "export": ("gpudense.cli.export", "a checkpoint's weights as .safetensors (loads into torch.nn.Sequential)"),
    "import": ("gpudense.cli.import_weights", "a checkpoint from .safetensors weights (gpudense's or a torch Sequential's)"),
}


class CliError(Exception):
    """An error to report to the user on one line, without a traceback."""


class Stopped(KeyboardInterrupt):
    """A signal that ends the run (SIGINT, SIGTERM, SIGHUP); :func:`main` returns 128 + its number.

    A ``KeyboardInterrupt``, so that whatever cleans up on Ctrl-C (a
    checkpoint's temporary file, a progress bar) cleans up the same way.

    Attributes:
        signum: The signal's number.
        note: What the command adds to its one line, e.g. where the last
            checkpoint is (empty: nothing).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.note = ""


#: The signals that end a run as Ctrl-C does (SIGHUP where the system has it).
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)


def _stop(signum: int, frame: Any) -> None:
    # Later signals are ignored until main returns: the cleanup of the first must finish.
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """While inside, SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _one_line_warnings(command: str) -> Any:
    """A ``warnings.showwarning`` printing ``gpudense <command>: warning: <message>`` on one line.

    Python's default shows the file and source line that warned, which tells
    a user of the command line nothing.
    """

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        text = str(message).splitlines()[0] if str(message) else category.__name__
        text = text.removeprefix("gpudense: ")
        with contextlib.suppress(OSError):  # one write, so that the lines of several ranks do not mix
            (sys.stderr if file is None else file).write(f"gpudense {command}: warning: {text}\n")

    return show


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``gpudense info | head -1``): end quietly, as SIGPIPE would."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the final flush at exit then goes nowhere
    except (OSError, ValueError, AttributeError):
        pass
    return 128 + getattr(signal, "SIGPIPE", 13)


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
    ``GPUDENSE_DEBUG=1`` shows the traceback instead. SIGINT, SIGTERM and
    SIGHUP end the run alike: one line (``train`` says where its last
    complete checkpoint is) and status 128 + the signal's number. A closed
    standard output (``gpudense info | head -1``) ends it quietly with status
    141, as SIGPIPE ends other tools. Warnings print as one line each.
    """
    shorten_openblas_spin()  # before the subcommand loads NumPy (and so OpenBLAS): see gpudense/_blas.py
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        debug = _env.debug()
    except ValueError as exc:
        _error_line(f"gpudense: error: {exc}")
        return 2
    parser = _build_parser(argv)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        with _stop_on_signals(), warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command)
            return int(module.run(args) or 0)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        note = getattr(exc, "note", "")
        with contextlib.suppress(OSError):
            _error_line(f"gpudense {args.command}: stopped by {signal.Signals(signum).name}"
                        + (f"; {note}" if note else ""))
        return 128 + signum
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except ImportError as exc:
        if debug:
            raise
        extra = {"train": "train", "bench": "bench", "export": "safetensors",
                 "import": "safetensors"}.get(args.command, "test")
        _error_line(f'gpudense {args.command}: error: {exc}; install it with pip install "gpudense[{extra}]"')
        return 1
    except MemoryError:
        if debug:
            raise
        _error_line(f"gpudense {args.command}: error: out of memory; try smaller sizes")
        return 1
    except (CliError, ValueError, TypeError, OSError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            return _quiet_broken_pipe()
        if debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _error_line(f"gpudense {args.command}: error: {message}")
        return 1
