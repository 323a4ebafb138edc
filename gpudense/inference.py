"""A trained model at work: rebuilt from its checkpoint, scored on labelled data, predicting classes.

:func:`load_model` rebuilds the :class:`~gpudense.nn.MLP` a checkpoint was
saved from; :func:`score` gives its loss, accuracy and per-class counts on
features and labels; :func:`predict` its class ids or probabilities. Both
read the features a batch at a time through
:meth:`~gpudense.backends.Backend.batches` (so memory-mapped features are
never read whole) on the model's backend, and cast them to the model's
dtype batch by batch. ``gpudense evaluate`` and ``gpudense predict`` are
these functions on the command line.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gpudense.checkpoint import CheckpointError, load_checkpoint
from gpudense.datasets import DataError, take_rows
from gpudense.losses import softmax_cross_entropy
from gpudense.nn import MLP
from gpudense.training import EVAL_BATCH

__all__ = ["load_model", "predict", "score"]


def load_model(path: str | os.PathLike[str], *, backend: Any = "auto") -> MLP:
    """The :class:`~gpudense.nn.MLP` saved in the checkpoint ``path``, on ``backend``.

    Raises:
        CheckpointError: the file is not a readable checkpoint, or holds no
            model configuration (one saved from a model without ``config()``).

    Example:
        >>> import os, tempfile
        >>> from gpudense.checkpoint import save_checkpoint
        >>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
        >>> _ = save_checkpoint(path, MLP([3, 4, 2], backend="numpy", rng=0), epoch=1)
        >>> load_model(path, backend="numpy").sizes
        [3, 4, 2]
    """
    ckpt = load_checkpoint(path)
    config = ckpt.model_config
    if config is None:
        raise CheckpointError(f"checkpoint {path} holds no model configuration (sizes, activation, dtype)")
    model = MLP(config["sizes"], activation=config["activation"], bias=config["bias"], dtype=config["dtype"],
                backend=backend, rng=0)
    ckpt.restore(model)
    return model


def _features(model: MLP, x: Any, what: str) -> Any:
    if getattr(x, "ndim", None) != 2 or x.shape[1] != model.sizes[0]:
        raise DataError(f"{what}: the model takes {model.sizes[0]} features per sample; "
                        f"got shape {tuple(getattr(x, 'shape', ()))}")
    return take_rows(x, None, model.dtype)


def score(model: MLP, x: Any, y: Any, *, batch_size: int = EVAL_BATCH, what: str = "data") -> dict[str, Any]:
    """Mean softmax cross-entropy, accuracy and per-class counts of ``model`` on ``x``, ``y``.

    Args:
        model: A classifier (its outputs are class scores).
        x: Features ``(n, n_features)`` on the host (a memory map is read a
            batch at a time), any real dtype (cast to the model's per batch).
        y: Int labels ``(n,)`` in ``[0, n_classes)``.
        batch_size: Samples per forward pass.
        what: How messages name the data.

    Returns:
        ``{"samples", "loss", "accuracy", "classes": {"count", "correct",
        "predicted"}}``: per class, how many samples carry it, how many of
        those are predicted right, how many samples are predicted as it.

    Example:
        >>> model = MLP([2, 2], backend="numpy", rng=0)
        >>> r = score(model, np.ones((4, 2)), np.array([0, 1, 0, 1]))
        >>> r["samples"], sum(r["classes"]["count"])
        (4, 4)
    """
    n_classes = model.sizes[-1]
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise DataError(f"{what}: expected {x.shape[0]} integer labels; got {y.dtype} of shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{what}: labels must lie in [0, {n_classes}) for this model's {n_classes} classes; "
                        f"got values from {int(y.min())} to {int(y.max())}")
    x = _features(model, x, what)
    backend, xp = model.backend, model.backend.xp
    loss_sum = xp.zeros((), xp.float64)
    count = xp.zeros(n_classes, xp.int64)
    correct = xp.zeros(n_classes, xp.int64)
    predicted = xp.zeros(n_classes, xp.int64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for xb, yb in backend.batches(x, y, None, batch_size):
            logits = model(xb)
            loss, _ = softmax_cross_entropy(logits, yb, check=False)
            loss_sum += loss * int(xb.shape[0])
            pred = logits.argmax(axis=1)
            count += xp.bincount(yb, minlength=n_classes)
            predicted += xp.bincount(pred, minlength=n_classes)
            correct += xp.bincount(yb[pred == yb], minlength=n_classes)
    n = int(x.shape[0])
    to_list = lambda a: [int(v) for v in backend.to_numpy(a)]  # noqa: E731
    return {
        "samples": n,
        "loss": float(loss_sum) / n if n else float("nan"),
        "accuracy": int(correct.sum()) / n if n else float("nan"),
        "classes": {"count": to_list(count), "correct": to_list(correct), "predicted": to_list(predicted)},
    }


def predict(model: MLP, x: Any, *, proba: bool = False, batch_size: int = EVAL_BATCH,
            what: str = "data") -> np.ndarray:
    """``model``'s predictions for ``x`` on the host: class ids, or class probabilities with ``proba``.

    Args:
        model: A classifier.
        x: Features ``(n, n_features)`` on the host, read a batch at a time.
        proba: Return softmax probabilities ``(n, n_classes)`` (float32, or
            float64 for a float64 model) instead of int64 class ids ``(n,)``.
        batch_size: Samples per forward pass.
        what: How messages name the data.

    Example:
        >>> model = MLP([2, 3], backend="numpy", rng=0)
        >>> predict(model, np.ones((4, 2))).shape, predict(model, np.ones((4, 2)), proba=True).sum(axis=1).round(3).tolist()
        ((4,), [1.0, 1.0, 1.0, 1.0])
    """
    x = _features(model, x, what)
    backend, xp = model.backend, model.backend.xp
    wide = np.float64 if model.dtype == np.float64 else np.float32
    n = int(x.shape[0])
    out = np.empty((n, model.sizes[-1]) if proba else (n,), wide if proba else np.int64)
    start = 0
    for xb, _ in backend.batches(x, None, None, batch_size):
        logits = model(xb)
        if proba:
            z = logits.astype(wide)
            z = xp.exp(z - z.max(axis=1, keepdims=True))
            result = z / z.sum(axis=1, keepdims=True)
        else:
            result = logits.argmax(axis=1)
        out[start:start + int(xb.shape[0])] = backend.to_numpy(result)
        start += int(xb.shape[0])
    return out
