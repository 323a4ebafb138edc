"""The interface every gpudense backend implements."""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import numpy as np

from gpudense._checks import array_kind
from gpudense._nvtx import is_profiling, profiling
from gpudense.activation_math import activation_forward, activation_grad


class Backend:
    """One array library (NumPy, CuPy) seen through what gpudense needs of it.

    The math in :mod:`gpudense.functional` is written once against ``xp``.
    The operations whose best form differs by backend are the hooks here:

    * :meth:`matmul`, ``a @ b`` (on NumPy, 16-bit types are multiplied in
      float32 and rounded once; cuBLAS does the same on CuPy);
    * :meth:`bias_grad`, the column sums ``db = dy.sum(0)`` (a BLAS
      matrix-vector product on NumPy, a deterministic RawKernel on CuPy);
    * :meth:`matmul_acc`, ``out += a @ b`` (one cuBLAS GEMM with ``beta = 1``
      on CuPy), which accumulates a weight gradient without a temporary;
    * :meth:`bias_act` and :meth:`act_bias_grad`, a dense layer's bias and
      activation after its product and their gradients (the formulas of
      :mod:`gpudense.activation_math` on NumPy, one pass each on CuPy).

    :meth:`optimizer_update` runs an optimizer step as one fused kernel
    where the backend has one (CuPy); elsewhere the optimizer's chunked
    array code runs. The rest (:meth:`nvtx_range`, :meth:`asarray`, :meth:`to_numpy`,
    :meth:`synchronize`, :meth:`describe`) moves arrays and reports facts.
    """

    #: Short name, as accepted by :func:`gpudense.get_backend`.
    name: str = ""
    #: The array module (``numpy`` or ``cupy``).
    xp: Any = None
    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        """``a @ b`` for 2-D ``a``, ``b`` of one dtype, into ``out`` when given (C-contiguous)."""
        return self.xp.matmul(a, b, out=out)

    def matmul_acc(self, a: Any, b: Any, out: Any) -> Any:
        """``out += a @ b`` for 2-D ``a``, ``b``; returns ``out``.

        ``out`` has the product's shape and dtype. The default adds a
        temporary product; backends with a GEMM that accumulates (``beta =
        1``) use it instead.
        """
        out += self.xp.matmul(a, b)
        return out

    def weight_grad(self, x: Any, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        """``dw = x.T @ dy`` for 2-D ``x`` (batch, n_in) and ``dy`` (batch, n_out); returns ``dw``.

        Written into ``out`` (C-contiguous ``(n_in, n_out)``) when given, or
        added to it with ``accumulate`` (through :meth:`matmul_acc`). The
        default is one product; a backend may pick a better form for a shape
        (NumPy: an outer product for a batch of one).
        """
        if accumulate:
            return self.matmul_acc(x.T, dy, out)
        return self.matmul(x.T, dy, out=out)

    def bias_grad(self, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        """Column sums of the 2-D ``dy`` (batch, m): ``db[j] = sum_k dy[k, j]``.

        float16 input is summed in float32 and rounded once. With ``out`` the
        result is written there (``out += ...`` with ``accumulate``) and
        ``out`` is returned.
        """
        raise NotImplementedError

    def bias_act(self, z: Any, b: Any, activation: str) -> tuple[Any, Any]:
        """``y = act(z + b)`` for the fresh 2-D product ``z`` (batch, m), which it may overwrite.

        Args:
            z: The product ``x @ w``, owned by the caller and free to reuse.
            b: The bias ``(m,)``, or None.
            activation: ``"relu"``, ``"gelu"`` or ``"tanh"``.

        Returns:
            ``(y, saved)`` as :func:`gpudense.activation_math.activation_forward`
            gives them: ``saved`` is ``y`` (relu, tanh) or ``z + b`` (gelu).
        """
        return activation_forward(self.xp, activation, z, b, overwrite=True)

    def act_bias_grad(self, dy: Any, saved: Any, activation: str, out: Any = None, *,
                      accumulate: bool = False, bias: bool = True) -> tuple[Any, Any]:
        """``dz = dy * act'(z)`` and ``db = dz.sum(0)`` for 2-D ``dy`` (batch, m).

        Args:
            dy: dL/dy, (batch, m).
            saved: What :meth:`bias_act` returned as ``saved``; C-contiguous.
            activation: ``"relu"``, ``"gelu"`` or ``"tanh"``.
            out: Optional ``(m,)`` array for ``db`` (as :meth:`bias_grad`).
            accumulate: ``out += db`` instead of ``out = db``.
            bias: Whether ``db`` is wanted; if False it is None.

        Returns:
            ``(dz, db)``: ``dz`` a new C-contiguous array of ``dy``'s shape
            and dtype, ``db`` as :meth:`bias_grad` returns it (the sum of
            ``dz`` as stored, in the accumulator type, rounded once), or None.
        """
        dz = activation_grad(self.xp, activation, saved, dy)
        db = self.bias_grad(dz, out, accumulate=accumulate) if bias else None
        return dz, db

    def optimizer_update(self, rule: str, *, w: Any, g: Any, state: dict[str, Any], p_low: Any,
                         scalars: dict[str, Any]) -> bool:
        """Run one step of optimizer ``rule`` over 1-D arrays as one fused kernel, where the backend has one.

        Args:
            rule: ``"adam"`` (Adam and AdamW) or ``"sgd"``.
            w: The array to update in place: the parameters, or their wide
                master copy.
            g: The gradients, ``w``'s length, in the parameters' dtype.
            state: The rule's state arrays by slot name (``m``, ``v``;
                ``momentum``), ``w``'s length and dtype, updated in place.
            p_low: The 16-bit parameters to rewrite from ``w``, or None.
            scalars: The rule's numbers and flags for this step, as
                :mod:`gpudense.optim` computes them.

        Returns:
            True when done; False (the default, and NumPy's answer) when the
            optimizer should run its chunked array code instead.
        """
        return False

    @property
    def profiling(self) -> bool:
        """Whether the layers' stages open their NVTX ranges here and now (inside :meth:`profiled`)."""
        return is_profiling()

    def profiled(self, enabled: bool = True) -> ContextManager[None]:
        """Within the block, the layers' stages open their NVTX ranges when ``enabled``.

        The setting holds for all the code that runs inside the block (in
        this thread or task), whichever backend its arrays are on.

        Example:
            >>> from gpudense import get_backend
            >>> be = get_backend("numpy")
            >>> with be.profiled():
            ...     be.profiling
            True
            >>> be.profiling
            False
        """
        return profiling(enabled)

    def nvtx_range(self, name: str) -> ContextManager[None]:
        """A profiler range around a stage (a shared no-op where there is no profiler)."""
        return _NULL

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` as an array of this backend (copied across devices if needed)."""
        raise NotImplementedError

    def batches(self, x: Any, y: Any, order: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
        """Mini-batches ``(xb, yb)`` on this backend: rows ``order[k:k + batch_size]``, or in turn when ``order`` is None.

        ``y`` may be None (then every ``yb`` is None). Data already on this
        backend (``x`` a NumPy array on NumPy, a CuPy
        array on CuPy; ``order`` alongside) are sliced where they lie. Other
        data (host arrays for a device, or :class:`~gpudense.datasets.Rows` of
        a memory-mapped file) are streamed by :meth:`stream_batches`.

        Example:
            >>> from gpudense import get_backend
            >>> import numpy as np
            >>> x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
            >>> [yb.tolist() for _, yb in get_backend("numpy").batches(x, y, np.array([4, 0, 2]), 2)]
            [[4, 0], [2]]
        """
        if _kind(x) != self.name:
            return self.stream_batches(x, y, order, batch_size)
        return _sliced(self, x, y, order, batch_size)

    def stream_batches(self, x: Any, y: Any, order: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
        """Host rows gathered a batch at a time into two staging buffers, used in turn.

        Batch ``k + 1`` goes into the buffer that batch ``k`` does not use, so
        a yielded batch stays valid until the next but one is asked for. The
        CuPy backend gathers into pinned host buffers and copies them to the
        device on a second stream, so that the copy of batch ``k + 1`` runs
        while the device still computes batch ``k``; on NumPy the buffers are
        the batches.
        """
        n = int(x.shape[0] if order is None else order.shape[0])
        if n == 0:
            return
        m = min(batch_size, n)
        xs = [np.empty((m, int(x.shape[1])), x.dtype) for _ in range(2)]
        ys = [np.empty(m, np.int64) for _ in range(2)]

        def gather(start: int) -> tuple[Any, Any]:
            rows = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
            count = min(batch_size, n - start)
            slot = (start // batch_size) % 2
            xb, yb = xs[slot][:count], ys[slot][:count]
            xb[...] = x[rows]
            if y is None:
                return self.asarray(xb), None
            yb[...] = y[rows]
            return self.asarray(xb), self.asarray(yb)

        for start in range(0, n, batch_size):
            yield gather(start)

    def to_numpy(self, a: Any) -> Any:
        """``a`` as a ``numpy.ndarray`` (a host copy for device arrays)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""

    def describe(self) -> dict[str, str]:
        """Versions and device facts for ``gpudense info`` and the benchmark's JSON."""
        return {}

    def __repr__(self) -> str:
        return f"<gpudense backend {self.name!r}>"


_NULL: ContextManager[None] = contextlib.nullcontext()  # reusable and re-entrant


def _kind(a: Any) -> str:
    """``array_kind(a)``, or ``"host"`` for anything else that is indexed by rows (:class:`~gpudense.datasets.Rows`)."""
    try:
        return array_kind(a)
    except TypeError:
        return "host"


def _sliced(backend: Backend, x: Any, y: Any, order: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
    n = int(x.shape[0] if order is None else order.shape[0])
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
        yield backend.asarray(x[rows]), (None if y is None else backend.asarray(y[rows]))
