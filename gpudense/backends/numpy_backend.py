"""The NumPy (CPU) backend.

Design notes (the benchmark figures are in docs/benchmarking.md):

* The bias gradient of float32/float64 is ``ones @ dy``, a BLAS matrix-vector
  product: it runs on all BLAS threads, where ``dy.sum(axis=0)`` runs on one,
  and it has less per-call overhead for small batches. Both add the rows in
  the working precision, so results differ by rounding only (on 1048576 x 64
  standard normal float32 numbers drawn with seed 0, the largest error
  against a float64 sum is 0.018 for gemv and 0.11 for ``dy.sum(axis=0)``).
* float16 and bfloat16 products are computed in float32 (float32 copies of
  the operands, one BLAS call) and rounded once: NumPy has no 16-bit BLAS,
  its own float16 loop is slow and adds in float16, and bfloat16 has none.
* The forward product of a tall, narrow layer is one BLAS call, not a loop
  over row blocks that adds the bias to each block of ``y`` while it is in
  cache. On the 2-core build machine the row-blocked form saves about 20% of
  the forward pass on one thread, but with two BLAS threads, on a busy
  machine, each of its hundreds of smaller calls waits for both threads and
  it runs 1.1-2.3x slower.
"""

from __future__ import annotations

import os
import platform
import threading
from typing import Any

import numpy as np

from gpudense._checks import wide_dtype
from gpudense.backends.base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def __init__(self) -> None:
        self._ones: dict[np.dtype, np.ndarray] = {}
        self._ones_lock = threading.Lock()

    def _ones_of(self, n: int, dtype: np.dtype) -> np.ndarray:
        """A read-only vector of ``n`` ones, cached per dtype (grown as needed)."""
        ones = self._ones.get(dtype)
        if ones is None or ones.shape[0] < n:
            with self._ones_lock:
                ones = self._ones.get(dtype)
                if ones is None or ones.shape[0] < n:
                    ones = np.ones(max(n, 1024), dtype=dtype)
                    ones.flags.writeable = False
                    self._ones[dtype] = ones
        return ones[:n]

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        """``a @ b``; float16 and bfloat16 in float32, rounded once (into ``out`` when given)."""
        if a.dtype in _NATIVE:
            return np.matmul(a, b, out=out)
        wide = wide_dtype(a.dtype)
        product = np.matmul(a.astype(wide), b.astype(wide))
        if out is None:
            return product.astype(a.dtype)
        out[...] = product
        return out

    def matmul_acc(self, a: Any, b: Any, out: Any) -> Any:
        """``out += a @ b``; float16 and bfloat16 add the float32 product in float32, rounded once."""
        wide = wide_dtype(out.dtype)
        if wide == out.dtype:
            out += np.matmul(a, b)
            return out
        total = np.matmul(a.astype(wide), b.astype(wide))
        total += out
        out[...] = total
        return out

    def weight_grad(self, x: Any, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        """``dw = x.T @ dy`` (or ``out += x.T @ dy``); a batch of one as an outer product.

        float32 and float64 only, written (not added) into ``dw``: with one
        row the product has an inner size of 1, and one multiply per element
        (``x[0, i] * dy[0, j]``, the product's only term, so the same bits)
        writes ``dw`` in one pass where a GEMM call costs several times more.
        With an output of at most 16 columns and a batch of at least 256
        rows, ``dw.T = dy.T @ x`` is computed instead: BLAS then splits the
        long ``n_in`` side of the product across its threads.
        """
        batch, n_in = x.shape
        n_out = dy.shape[1]
        if not accumulate and x.dtype in _NATIVE:
            if out is None:
                out = np.empty((n_in, n_out), dtype=x.dtype)
            if batch == 1:
                return np.multiply(x.reshape(n_in, 1), dy, out=out)
            if n_out <= 16 < n_in and batch >= 256:
                np.matmul(dy.T, x, out=out.T)
                return out
            return np.matmul(x.T, dy, out=out)
        return super().weight_grad(x, dy, out, accumulate=accumulate)

    def bias_grad(self, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        out_dtype = dy.dtype
        if out is not None and not accumulate and out_dtype in _NATIVE:  # straight into out: no temporary
            return np.matmul(self._ones_of(dy.shape[0], out_dtype), dy, out=out)
        acc = wide_dtype(out_dtype)
        if acc != out_dtype:
            # 16-bit types are summed in float32, as the CUDA kernel does, then rounded once.
            dy = dy.astype(acc)
            db = np.matmul(self._ones_of(dy.shape[0], acc), dy)
        else:
            # BLAS gemv: multi-threaded, and cheaper per call than a NumPy reduction.
            db = np.matmul(self._ones_of(dy.shape[0], dy.dtype), dy)
        if out is None:
            return db.astype(out_dtype, copy=False)
        if accumulate:
            if acc != out_dtype:
                db += out  # add in the wide type, round once
                out[...] = db
            else:
                out += db
        else:
            out[...] = db
        return out

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        module = type(a).__module__ or ""
        if module == "cupy" or module.startswith("cupy."):
            a = a.get()
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> Any:
        return self.asarray(a)

    def describe(self) -> dict[str, str]:
        return {"numpy": np.__version__, "cpu": cpu_model()}


_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))  # products BLAS computes as they are


def cpu_model() -> str:
    """The CPU's model name and logical core count, e.g. ``"AMD EPYC 9654 (2 cores)"``."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
