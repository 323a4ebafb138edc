"""The interface every gpudense backend implements."""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator


class Backend:
    """One array library (NumPy, CuPy) seen through what gpudense needs of it.

    The math in :mod:`gpudense.functional` is written once against ``xp``;
    only the operations below differ by backend.
    """

    #: Short name, as accepted by :func:`gpudense.get_backend`.
    name: str = ""
    #: The array module (``numpy`` or ``cupy``).
    xp: Any = None

    def matmul(self, a: Any, b: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        """``a @ b`` for 2-D ``a``, ``b``; with ``accumulate``, ``out += a @ b``.

        ``out`` must be C-contiguous with the result's shape and dtype, and is
        returned. Without ``accumulate`` and without ``out``, a new array.
        """
        xp = self.xp
        if out is None:
            return xp.matmul(a, b)
        if accumulate:
            out += xp.matmul(a, b)
            return out
        return xp.matmul(a, b, out=out)

    def linear(self, x: Any, w: Any, b: Any = None) -> Any:
        """``x @ w + b`` for 2-D ``x`` (batch, n_in), ``w`` (n_in, n_out), ``b`` (n_out,) or None.

        Returns a new C-contiguous array. The default spends one matrix
        product and one in-place pass for the bias; backends may fuse them.
        """
        y = self.matmul(x, w)
        if b is not None:
            y += b
        return y

    def bias_grad(self, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        """Column sums of the 2-D ``dy`` (batch, m): ``db[j] = sum_k dy[k, j]``.

        float16 input is summed in float32 and rounded once. With ``out`` the
        result is written there (``out += ...`` with ``accumulate``) and
        ``out`` is returned.
        """
        raise NotImplementedError

    def nvtx_range(self, name: str) -> ContextManager[None]:
        """A profiler range around a stage (no-op where there is no profiler)."""
        return _null_range()

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` as an array of this backend (copied across devices if needed)."""
        raise NotImplementedError

    def to_numpy(self, a: Any) -> Any:
        """``a`` as a ``numpy.ndarray`` (a host copy for device arrays)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""

    def describe(self) -> dict[str, str]:
        """Versions and device facts for ``gpudense info``."""
        return {}

    def __repr__(self) -> str:
        return f"<gpudense backend {self.name!r}>"


@contextlib.contextmanager
def _null_range() -> Iterator[None]:
    yield
