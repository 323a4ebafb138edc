"""The dense layer's math, written once against the backend's array module.

Shapes: ``x`` is ``(..., n_in)``, ``w`` is ``(n_in, n_out)`` with ``w[i, j]``
joining input ``i`` to neuron ``j``, ``b`` is ``(n_out,)``. Leading dimensions
of ``x`` count as one batch of ``batch = prod(x.shape[:-1])`` rows.

    forward:   y  = x @ w + b
    backward:  dx = dy @ w.T        dw = x.T @ dy        db = sum over the batch of dy
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gpudense.backends import Backend, backend_of

__all__ = ["DenseGrads", "SUPPORTED_DTYPES", "dense_backward", "dense_forward"]

#: Floating dtypes gpudense computes in.
SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


class DenseGrads(NamedTuple):
    """Gradients of a dense layer; an entry is None when it was not asked for."""

    dx: Any  #: dL/dx, shape of ``x``, or None when ``input_grad=False``
    dw: Any  #: dL/dw, shape ``(n_in, n_out)``
    db: Any  #: dL/db, shape ``(n_out,)``, or None when ``bias=False``


def _describe(a: Any) -> str:
    return f"{type(a).__module__}.{type(a).__name__} of shape {tuple(a.shape)} and dtype {a.dtype}"


def _batch(x: Any) -> int:
    """Rows of the batch: the product of x's leading dimensions (1 for a single sample)."""
    return math.prod(x.shape[:-1])


def _check_dtype(name: str, a: Any) -> None:
    if np.dtype(a.dtype) not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} must be a floating array (float16, float32 or float64); got dtype {a.dtype}"
        )


def _check_forward_args(x: Any, w: Any, b: Any) -> Backend:
    backend = backend_of(x, w, b)
    _check_dtype("x", x)
    _check_dtype("w", w)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (n_in, n_out); got {_describe(w)}")
    if x.ndim < 1:
        raise ValueError(f"x must have at least 1 dimension (..., n_in); got {_describe(x)}")
    if x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"x's last dimension must equal w's in_features {w.shape[0]}; got x of shape "
            f"{tuple(x.shape)} and w of shape {tuple(w.shape)}"
        )
    if x.dtype != w.dtype:
        raise TypeError(
            f"x and w must have the same dtype (no silent cast); got x {x.dtype} and w {w.dtype}"
        )
    if b is not None:
        _check_dtype("b", b)
        if b.shape != (w.shape[1],):
            raise ValueError(
                f"b must have shape ({w.shape[1]},) to match w's out_features; got shape {tuple(b.shape)}"
            )
        if b.dtype != w.dtype:
            raise TypeError(f"b must have w's dtype {w.dtype}; got {b.dtype}")
    return backend


def dense_forward(x: Any, w: Any, b: Any = None) -> Any:
    """Forward pass of a dense layer: ``y = x @ w + b``.

    Args:
        x: Input, shape ``(..., n_in)``; NumPy or CuPy, float16/32/64.
        w: Weights, shape ``(n_in, n_out)``; ``w[i, j]`` joins input ``i`` to
            neuron ``j``. Same backend and dtype as ``x``.
        b: Optional bias, shape ``(n_out,)``, same backend and dtype.

    Returns:
        ``y`` of shape ``(..., n_out)``, a new array on the inputs' backend.

    Raises:
        TypeError: non-floating or mismatched dtypes, non-arrays, or NumPy and
            CuPy arrays mixed.
        ValueError: wrong ranks or mismatched sizes.

    Example:
        >>> x = np.ones((2, 3), np.float32); w = np.ones((3, 4), np.float32)
        >>> dense_forward(x, w, np.zeros(4, np.float32)).tolist()
        [[3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]]
    """
    backend = _check_forward_args(x, w, b)
    n_in, n_out = w.shape
    with backend.nvtx_range("gpudense.forward"):
        y = backend.linear(x.reshape(_batch(x), n_in), w, b)
    return y.reshape(x.shape[:-1] + (n_out,))


def dense_backward(dy: Any, x: Any, w: Any, *, bias: bool = True, input_grad: bool = True) -> DenseGrads:
    """Backward pass of a dense layer.

    Args:
        dy: dL/dy, shape ``(..., n_out)`` matching the forward output.
        x: The forward input, shape ``(..., n_in)``.
        w: The weights, shape ``(n_in, n_out)``.
        bias: Whether the layer has a bias; if False, ``db`` is None.
        input_grad: Whether to compute ``dx``; if False, ``dx`` is None and
            no matrix product is spent on it (the first layer of a network
            needs no dL/dx).

    Returns:
        ``DenseGrads(dx, dw, db)`` with ``dx = dy @ w.T`` (shape of ``x``),
        ``dw = x.T @ dy`` (``(n_in, n_out)``) and ``db = dy`` summed over the
        batch (``(n_out,)``). An empty batch gives ``dw = 0``, ``db = 0``.

    Raises:
        TypeError, ValueError: as :func:`dense_forward`, and when ``dy``'s
            shape or dtype differs from the forward output's.

    Example:
        >>> x = np.ones((2, 3)); w = np.ones((3, 4)); dy = np.ones((2, 4))
        >>> g = dense_backward(dy, x, w)
        >>> g.dx.shape, g.dw.shape, g.db.tolist()
        ((2, 3), (3, 4), [2.0, 2.0, 2.0, 2.0])
    """
    return _backward(dy, x, w, bias=bias, input_grad=input_grad)


def _backward(
    dy: Any,
    x: Any,
    w: Any,
    *,
    bias: bool,
    input_grad: bool,
    dw_acc: Any = None,
    db_acc: Any = None,
) -> DenseGrads:
    """:func:`dense_backward`, optionally adding ``dw``/``db`` into existing arrays.

    ``dw_acc`` and ``db_acc``, when given, receive ``+=`` the new gradients
    (the accumulating matrix product and bias-gradient kernel do this in one
    pass) and are returned in their places.
    """
    backend = _check_forward_args(x, w, None)
    if backend_of(dy, x) is not backend:  # raises on a NumPy/CuPy mix
        raise TypeError("dy must live on the same backend as x")
    _check_dtype("dy", dy)
    n_in, n_out = w.shape
    expected = tuple(x.shape[:-1]) + (n_out,)
    if tuple(dy.shape) != expected:
        raise ValueError(
            f"dy must have the forward output's shape {expected}; got shape {tuple(dy.shape)}"
        )
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have the forward dtype {x.dtype}; got {dy.dtype}")

    batch = _batch(x)
    x2 = x.reshape(batch, n_in)
    dy2 = dy.reshape(batch, n_out)
    dx = dw = db = None
    with backend.nvtx_range("gpudense.backward"):
        if input_grad:
            with backend.nvtx_range("gpudense.backward.dx"):
                dx = backend.matmul(dy2, w.T).reshape(x.shape)
        with backend.nvtx_range("gpudense.backward.dw"):
            dw = backend.matmul(x2.T, dy2, dw_acc, accumulate=dw_acc is not None)
        if bias:
            with backend.nvtx_range("gpudense.backward.db"):
                db = backend.bias_grad(dy2, db_acc, accumulate=db_acc is not None)
    return DenseGrads(dx, dw, db)
