"""Losses with their gradients: softmax cross-entropy and mean squared error.

Each loss function returns ``LossGrad(loss, grad)``: the loss as a 0-d array
on the inputs' backend (``float(loss)`` reads it; on a GPU that waits for the
device, so a training loop should read it rarely) and dL/d(input), the shape
and dtype of the input, ready for ``model.backward``.

float16 and bfloat16 inputs are reduced in float32 (the loss is float32, the
gradient is rounded to the input's dtype once at the end).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gpudense._checks import check_float_array, wide_dtype
from gpudense.backends import backend_of

__all__ = ["LossGrad", "check_labels", "mse_loss", "softmax_cross_entropy"]


class LossGrad(NamedTuple):
    """A loss (0-d array) and its gradient with respect to the loss's input."""

    loss: Any
    grad: Any


def check_labels(labels: Any, batch: int, n_classes: int) -> None:
    """Check that ``labels`` is a 1-D integer array of ``batch`` class indices in ``[0, n_classes)``.

    Reading the range copies two numbers to the host (on a GPU, a wait for
    the device); a training loop checks its whole label set once and then
    passes ``check=False`` per batch.

    Raises:
        TypeError: not an integer array.
        ValueError: wrong shape, or a label out of range.
    """
    if np.dtype(labels.dtype).kind not in "iu":
        raise TypeError(f"labels must be an integer array of class indices; got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape ({batch},), one class index per row; got {tuple(labels.shape)}")
    if batch:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"labels must lie in [0, {n_classes}) for {n_classes} classes; got values from {lo} to {hi}"
            )


def softmax_cross_entropy(logits: Any, labels: Any, *, check: bool = True) -> LossGrad:
    """Mean softmax cross-entropy over the batch, and its gradient.

    ``loss = mean_k [ logsumexp(logits[k]) - logits[k, labels[k]] ]``, with
    the log-sum-exp taken after subtracting each row's maximum, so large
    logits do not overflow. The gradient is the fused form
    ``(softmax(logits) - onehot(labels)) / batch``.

    Args:
        logits: Scores, shape ``(batch, n_classes)``, float16, bfloat16, float32 or float64.
        labels: Class indices, integer array of shape ``(batch,)`` on the same backend.
        check: Validate the labels (dtype, shape, range; see :func:`check_labels`).

    Returns:
        ``LossGrad(loss, grad)``: ``loss`` a 0-d array (float32 for float16 and bfloat16
        logits, else the logits' dtype), ``grad`` the shape and dtype of ``logits``.

    Raises:
        TypeError: non-float logits, non-integer labels, NumPy and CuPy mixed.
        ValueError: bad shapes, an empty batch, labels out of range.

    Example:
        >>> logits = np.array([[2.0, 0.0], [0.0, 0.0]])
        >>> out = softmax_cross_entropy(logits, np.array([0, 1]))
        >>> round(float(out.loss), 4), out.grad.shape
        (0.41, (2, 2))
    """
    backend = backend_of(logits, labels)
    xp = backend.xp
    check_float_array("logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (batch, n_classes); got shape {tuple(logits.shape)}")
    batch, n_classes = logits.shape
    if batch == 0:
        raise ValueError("softmax_cross_entropy needs a non-empty batch (the mean of nothing is undefined)")
    if n_classes == 0:
        raise ValueError("logits must have at least one class column")
    if check:
        check_labels(labels, batch, n_classes)
    wide = wide_dtype(logits.dtype)
    z = logits.astype(wide, copy=True)           # the one working array, (batch, n_classes)
    z -= z.max(axis=1, keepdims=True)            # shift: exp of at most 0
    rows = xp.arange(batch)
    picked = z[rows, labels]                     # shifted logit of the true class, (batch,)
    xp.exp(z, out=z)
    s = z.sum(axis=1, keepdims=True)
    loss = (xp.log(s[:, 0]) - picked).mean()
    z /= s                                        # softmax
    z[rows, labels] -= 1
    z *= 1.0 / batch
    grad = z if z.dtype == logits.dtype else z.astype(logits.dtype)
    return LossGrad(loss, grad)


def mse_loss(y: Any, target: Any) -> LossGrad:
    """Mean squared error over all elements, and its gradient.

    ``loss = mean((y - target)**2)`` (PyTorch's ``MSELoss()``, reduction
    "mean"); ``grad = 2 (y - target) / y.size``.

    Args:
        y: Predictions, any shape, float16, bfloat16, float32 or float64.
        target: Targets, the same shape, dtype and backend.

    Returns:
        ``LossGrad(loss, grad)``: ``loss`` a 0-d array, ``grad`` shaped as ``y``.

    Raises:
        TypeError: non-float or mismatched dtypes, NumPy and CuPy mixed.
        ValueError: mismatched shapes or empty arrays.

    Example:
        >>> out = mse_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
        >>> float(out.loss), out.grad.tolist()
        (2.5, [1.0, 2.0])
    """
    backend_of(y, target)
    check_float_array("y", y)
    check_float_array("target", target)
    if tuple(y.shape) != tuple(target.shape):
        raise ValueError(f"target must have y's shape {tuple(y.shape)}; got {tuple(target.shape)}")
    if y.dtype != target.dtype:
        raise TypeError(f"target must have y's dtype {y.dtype} (no silent cast); got {target.dtype}")
    if y.size == 0:
        raise ValueError("mse_loss needs at least one element (the mean of nothing is undefined)")
    wide = wide_dtype(y.dtype)
    diff = y.astype(wide, copy=True)
    diff -= target
    loss = (diff * diff).mean()
    diff *= 2.0 / y.size
    grad = diff if diff.dtype == y.dtype else diff.astype(y.dtype)
    return LossGrad(loss, grad)

