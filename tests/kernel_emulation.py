"""A NumPy model of the kernels' exact order of operations (the GPU tests' bitwise reference).

:func:`emulate_bias_grad` computes on the host what ``kernels/bias_grad.cu``
computes on the device for a given :class:`~gpudense.backends.cuda.plan.BiasGradPlan`,
adding the same numbers in the same order and type. The GPU tests compare the
kernel's ``db`` with it bit for bit; the CPU tests check it against a literal
thread-by-thread model of the kernel and against the .cu file compiled as
host C++.

:func:`emulate_act_bias_grad` and :func:`emulate_bias_act` model the fused
activation kernels: the element-wise math is
:mod:`gpudense.activation_math`'s (the kernel performs the same roundings in
the same order), and the fused ``db`` is :func:`emulate_bias_grad` of ``dz``
as stored.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gpudense.activation_math import activation_forward, activation_grad
from gpudense.backends.cuda.plan import BiasGradPlan, _ceil_div, accumulator_dtype

__all__ = ["emulate_act_bias_grad", "emulate_bias_act", "emulate_bias_grad"]


def _tree(parts: np.ndarray) -> np.ndarray:
    """The kernels' fixed tree over axis 0 (a power of two): rows [0, s) += rows [s, 2s)."""
    parts = parts.copy()
    s = parts.shape[0] // 2
    while s > 0:
        parts[:s] = parts[:s] + parts[s : 2 * s]
        s //= 2
    return parts[0]


def emulate_bias_grad(dy: np.ndarray, plan: BiasGradPlan, out: np.ndarray | None = None, *,
                      accumulate: bool = False) -> np.ndarray:
    """The bias-gradient kernel's result, computed on the host in the kernel's order.

    Every addition the kernel performs on a column is performed here in the
    same order and the same floating type (float64 for float64, float32 for
    float32, float16 and bfloat16), so, IEEE addition being exactly rounded, the result
    equals the device's bit for bit (NaN payloads aside). Rows past the end of
    a chunk are padded with ``+0.0``, which leaves every sum unchanged (the
    accumulators start at ``+0.0`` and can never become ``-0.0``).

    Args:
        dy: Host array ``(plan.batch, plan.m)``, float16, bfloat16, float32 or float64.
        plan: The plan the kernel was (or would be) launched with.
        out: With ``accumulate``, the old ``db`` (it is not modified).
        accumulate: Return ``out + sum`` (rounded once) instead of the sum.

    Returns:
        ``db``, shape ``(m,)``, dtype of ``dy``.

    Raises:
        TypeError: ``dy`` is not float16, bfloat16, float32 or float64.
        ValueError: ``dy``'s shape is not the plan's, or ``accumulate``
            without ``out``.

    Example:
        >>> from gpudense.backends.cuda import bias_grad_plan
        >>> dy = np.ones((3, 2), np.float32)
        >>> plan = bias_grad_plan(3, 2, itemsize=4, ld=2, ptr=0, n_sm=1)
        >>> emulate_bias_grad(dy, plan)
        array([3., 3.], dtype=float32)
    """
    dy = np.asarray(dy)
    dtype = np.dtype(dy.dtype)
    try:
        acc_t = accumulator_dtype(dtype)
    except TypeError:
        raise TypeError(f"emulate_bias_grad needs float16, bfloat16, float32 or float64 dy; got {dtype}") from None
    batch, m = plan.batch, plan.m
    if dy.shape != (batch, m):
        raise ValueError(f"dy has shape {dy.shape}; the plan is for {(batch, m)}")
    rows_per_thread = plan.chunk_rows // plan.ty
    padded = np.zeros((plan.n_chunks * plan.chunk_rows, m), acc_t)
    padded[:batch] = dy.astype(acc_t)
    # row = chunk * chunk_rows + k * ty + t: thread t of chunk c adds k = 0, 1, ... in order.
    blocks = padded.reshape(plan.n_chunks, rows_per_thread, plan.ty, m)
    acc = np.zeros((plan.n_chunks, plan.ty, m), acc_t)
    for k in range(rows_per_thread):
        acc += blocks[:, k]
    partial = np.stack([_tree(acc[c]) for c in range(plan.n_chunks)])  # (n_chunks, m)
    if plan.final_in_pass1:
        s = partial[0]
    else:
        k2 = _ceil_div(plan.n_chunks, plan.ty2)
        ws = np.zeros((k2 * plan.ty2, m), acc_t)
        ws[: plan.n_chunks] = partial
        ws = ws.reshape(k2, plan.ty2, m)
        acc2 = np.zeros((plan.ty2, m), acc_t)
        for k in range(k2):
            acc2 += ws[k]
        s = _tree(acc2)
    if accumulate:
        if out is None:
            raise ValueError("accumulate=True needs out")
        s = np.asarray(out).astype(acc_t) + s
    return s.astype(dtype)


def emulate_act_bias_grad(dy: np.ndarray, saved: np.ndarray, activation: str, plan: BiasGradPlan,
                          out: np.ndarray | None = None, *, accumulate: bool = False,
                          tanh: Callable[[Any], Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The fused activation-gradient kernel's ``(dz, db)``, computed on the host in its order.

    ``dz = dy * act'(.)`` element by element as
    :func:`gpudense.activation_math.activation_grad` (16-bit types in
    float32, rounded once), and ``db`` the kernel's column sums of ``dz`` as
    stored (:func:`emulate_bias_grad` with the same ``plan``).

    Args:
        dy: Host array ``(plan.batch, plan.m)``.
        saved: What the forward pass kept (``y`` for relu and tanh, ``z`` for gelu), ``dy``'s shape and dtype.
        activation: ``"relu"``, ``"gelu"`` or ``"tanh"``.
        plan: The plan the kernel was (or would be) launched with.
        out, accumulate: As :func:`emulate_bias_grad`.
        tanh: The tanh the kernel's build uses (default NumPy's); gelu's ``dz`` depends on it.

    Returns:
        ``(dz, db)``.

    Example:
        >>> from gpudense.backends.cuda import bias_grad_plan
        >>> plan = bias_grad_plan(2, 2, itemsize=4, ld=2, ptr=0, n_sm=1)
        >>> y = np.array([[1.0, 0.0], [2.0, 3.0]], np.float32)
        >>> dz, db = emulate_act_bias_grad(np.ones((2, 2), np.float32), y, "relu", plan)
        >>> dz.tolist(), db.tolist()
        ([[1.0, 0.0], [1.0, 1.0]], [2.0, 1.0])
    """
    dz = activation_grad(np, activation, np.asarray(saved), np.asarray(dy), tanh=tanh)
    return dz, emulate_bias_grad(dz, plan, out, accumulate=accumulate)


def emulate_bias_act(z: np.ndarray, b: np.ndarray | None, activation: str, *,
                     tanh: Callable[[Any], Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The forward kernel's ``(y, saved)`` for the product ``z`` (not modified) and bias ``b``.

    ``z + b`` and the activation in the accumulator type, rounded once;
    ``saved`` is ``y`` (relu, tanh) or ``z + b`` rounded (gelu), as the
    kernel leaves them.

    Example:
        >>> y, saved = emulate_bias_act(np.array([[-1.0, 2.0]], np.float32), np.zeros(2, np.float32), "relu")
        >>> y.tolist()
        [[0.0, 2.0]]
    """
    return activation_forward(np, activation, np.array(z, copy=True), b, overwrite=True, tanh=tanh)
