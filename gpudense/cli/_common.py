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
from typing import Any, Callable, ContextManager


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

