"""NVTX ranges for Nsight Systems, at no cost where no NVTX library is present.

The provider is chosen once per process, on first use: the ``nvtx`` package
when it imports, else ``cupy.cuda.nvtx`` when CuPy was built with NVTX, else
nothing (every range is one shared no-op context manager). No provider is
imported before the first range.

Whether the layers' stages open ranges at all is the caller's choice, set by
:func:`profiling` (``backend.profiled()``, ``TrainConfig(profile=True)`` and
``gpudense train --profile`` use it) for the code that runs inside it, in
this thread or task: a context variable, not a flag passed to every function.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Any, Callable, ContextManager, Iterator

_NULL: ContextManager[None] = contextlib.nullcontext()  # reusable, re-entrant
_lock = threading.Lock()
_chosen: tuple[str, Callable[[str], None] | None, Callable[[], None] | None] | None = None
_profiling: contextvars.ContextVar[bool] = contextvars.ContextVar("gpudense_profiling", default=False)

#: Whether the code running now is inside :func:`profiling`: ``is_profiling() -> bool``.
is_profiling = _profiling.get


@contextlib.contextmanager
def profiling(enabled: bool = True) -> Iterator[None]:
    """Within the block, the layers' stages open their NVTX ranges (when ``enabled``; nesting keeps it on).

    Example:
        >>> with profiling():
        ...     is_profiling()
        True
        >>> is_profiling()
        False
    """
    token = _profiling.set(_profiling.get() or bool(enabled))
    try:
        yield
    finally:
        _profiling.reset(token)


def _choose() -> tuple[str, Callable[[str], None] | None, Callable[[], None] | None]:
    global _chosen
    with _lock:
        if _chosen is not None:
            return _chosen
        try:
            import nvtx  # the NVIDIA "nvtx" package
        except ImportError:
            nvtx = None
        if nvtx is not None:
            version = getattr(nvtx, "__version__", "")
            label = f"nvtx package {version}".rstrip()
            _chosen = (label, lambda name: nvtx.push_range(name), lambda: nvtx.pop_range())
            return _chosen
        try:
            from cupy.cuda import nvtx as cupy_nvtx
        except ImportError:
            cupy_nvtx = None
        if cupy_nvtx is not None and getattr(cupy_nvtx, "available", False):
            _chosen = ("cupy.cuda.nvtx", cupy_nvtx.RangePush, cupy_nvtx.RangePop)
            return _chosen
        _chosen = ("none", None, None)
        return _chosen


class _Range:
    __slots__ = ("name", "push", "pop")

    def __init__(self, name: str, push: Callable[[str], None], pop: Callable[[], None]) -> None:
        self.name, self.push, self.pop = name, push, pop

    def __enter__(self) -> None:
        self.push(self.name)

    def __exit__(self, *exc: Any) -> None:
        self.pop()


def nvtx_range(name: str) -> ContextManager[None]:
    """A context manager that marks ``name`` as an NVTX range (push on enter, pop on exit).

    Args:
        name: The range's label on the Nsight Systems timeline, e.g.
            ``"gpudense.backward.db"``.

    Returns:
        A context manager; a shared no-op one where no NVTX provider exists.

    Example:
        >>> with nvtx_range("gpudense.forward"):
        ...     pass
    """
    chosen = _chosen if _chosen is not None else _choose()
    push, pop = chosen[1], chosen[2]
    if push is None or pop is None:
        return _NULL
    return _Range(name, push, pop)


def nvtx_provider() -> str:
    """Which NVTX provider ranges go to: ``"nvtx package X"``, ``"cupy.cuda.nvtx"`` or ``"none"``."""
    return (_chosen if _chosen is not None else _choose())[0]
