"""Helpers shared by the ``train`` and ``bench`` commands: option types, output paths, threads, progress bars.

argparse turns the ``ArgumentTypeError`` of a type function into a one-line
usage error; every other check here raises ``ValueError``/``OSError``/
``RuntimeError``, which :func:`gpudense.cli.main` prints on one line.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``.

    Example:
        >>> int_at_least(1)("3")
        3
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def finite_float(*, positive: bool) -> Callable[[str], float]:
    """argparse type: a finite number > 0 (``positive``) or >= 0."""
    wanted = "a positive number" if positive else "a number >= 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}") from None
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}")
        return value

    parse.__name__ = "float>0" if positive else "float>=0"
    return parse


def path_value(text: str) -> str:
    """argparse type: a path, never an empty value (an unset shell variable gives one).

    Example:
        >>> path_value("run.npz")
        'run.npz'
        >>> path_value("")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a path; got an empty value (an unset shell variable?)
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path; got {'an empty value' if not text else repr(text)} "
                                         "(an unset shell variable?)")
    return text


path_value.__name__ = "path"


@contextlib.contextmanager
def option_errors(option: str) -> Any:
    """Within: an ``OSError`` or ``ValueError`` (a file that cannot be written, a path refused late) says
    which option it is about, as ``<option>: <message>``; its type and errno are kept.

    Example:
        >>> with option_errors("--plot"):
        ...     raise OSError(28, "No space left on device")
        Traceback (most recent call last):
        ...
        OSError: --plot: [Errno 28] No space left on device
    """
    try:
        yield
    except (OSError, ValueError) as exc:
        if str(exc).startswith(option):
            raise
        try:
            err = type(exc)(f"{option}: {exc}")
        except Exception:  # an exception type that takes other arguments
            err = (OSError if isinstance(exc, OSError) else ValueError)(f"{option}: {exc}")
        if isinstance(exc, OSError):
            err.errno = exc.errno
        raise err from exc


def check_distinct_paths(paths: dict[str, str | None], *, outputs: Sequence[str]) -> None:
    """Refuse an output option whose path is the file another option names (a plot over a checkpoint).

    Args:
        paths: ``{option: path or None}``, e.g. ``{"--save": ..., "--resume": ..., "--plot": ...}``.
        outputs: The options of ``paths`` that write their file; each must
            name a file no other option names.

    Raises:
        ValueError: one line naming both options and the path.

    Example:
        >>> check_distinct_paths({"--save": "a.npz", "--plot": "a.png"}, outputs=["--plot"])
        >>> check_distinct_paths({"--save": "x", "--plot": "./x"}, outputs=["--plot"])
        Traceback (most recent call last):
        ...
        ValueError: --plot ./x is the file --save x names; give --plot another path
    """
    given = {option: path for option, path in paths.items() if path}
    for option in outputs:
        if option not in given:
            continue
        for other, path in given.items():
            if other != option and _same_file(given[option], path):
                raise ValueError(f"{option} {given[option]} is the file {other} {path} names; "
                                 f"give {option} another path")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(option: str, path: str | None, *, suffix: str | None = None,
                      create_parent: bool = False) -> None:
    """Fail now, before any work, where ``option``'s ``path`` could not be written later.

    Checks that ``path`` ends in ``suffix`` (when given, in any case), is not
    a folder, and that its folder exists (or, with ``create_parent``, is
    created) and is writable. ``gpudense train`` and ``gpudense bench`` both
    refuse a missing folder (no ``create_parent``): a typo in a path should
    not leave new folders behind.

    Raises:
        ValueError, OSError: with one line naming the option and the path.
    """
    if not path:
        return
    if path.endswith(("/", os.sep)) or (os.altsep and path.endswith(os.altsep)):
        raise ValueError(f"{option}: expected a file path; {path} ends in a path separator (a folder)")
    if suffix is not None and not path.lower().endswith(suffix):
        raise ValueError(f"{option}: expected a path ending in {suffix}; got {path!r}")
    if Path(path).is_dir():
        raise ValueError(f"{option}: expected a file path; {path} is a directory")
    parent = Path(path).parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is not a directory")
    if not parent.is_dir():
        if not create_parent:
            raise ValueError(f"{option} {path}: directory {parent} does not exist")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"{option}: cannot create the folder {str(parent)!r}: {exc.strerror or exc}") from exc
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{option} {path}: directory {parent} is not writable")


def blas_threads(limit: int | None, *, option: str = "--threads", extra: str = "train",
                 required: bool = True) -> ContextManager[Any]:
    """Limit the BLAS thread pools to ``limit`` threads for a block (no-op for None).

    Without threadpoolctl: an error naming ``option`` and the extra to install
    when ``required``, else no limit.
    """
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        if not required:
            return contextlib.nullcontext()
        raise RuntimeError(f"{option} needs threadpoolctl ({exc}); pip install 'gpudense[{extra}]'") from exc
    return threadpool_limits(limits=limit, user_api="blas")


class _NoBar:
    """The part of tqdm's interface the commands use, doing nothing."""

    n = 0

    def update(self, n: int = 1) -> None: ...
    def set_description(self, s: str) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, *, enabled: bool, file: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar on ``file`` (default stderr), or a no-op bar when disabled or tqdm is missing."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, file=sys.stderr if file is None else file, leave=False, **kwargs)

