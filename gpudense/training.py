"""Training as a library: mini-batch training of a classifier with softmax cross-entropy.

:func:`fit` runs epochs of :func:`train_epoch` (shuffled mini-batches: forward,
loss, backward, optimizer step) and :func:`evaluate` (accuracy on the test
set), and returns the :class:`History`. It prints nothing: it reports through
callbacks, ``on_batch`` after every step and ``on_epoch`` after every epoch
(where a caller prints, draws a progress bar or saves a checkpoint).

The data are a :class:`~gpudense.data.Dataset` whose arrays lie on the host
or on the model's backend. :func:`to_device` copies them to the device where
they fit; a part that stays on the host is copied batch by batch.

Resuming: restore the model, the optimizer and the shuffling generator from a
:class:`~gpudense.checkpoint.Checkpoint`, then call :func:`fit` with
``start_epoch=ckpt.epoch`` and the saved history; the run continues exactly
as if it had not stopped.

Example:
    >>> from gpudense.data import make_synthetic
    >>> from gpudense.nn import MLP
    >>> from gpudense.optim import Adam
    >>> data = make_synthetic(600, 8, 3, seed=0)
    >>> model = MLP([8, 16, 3], backend="numpy", rng=0)
    >>> history = fit(model, Adam(model, lr=0.01), data, TrainConfig(epochs=3, rng=0))
    >>> len(history.loss), history.test_acc[-1] > 0.6
    (3, True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np

from gpudense._checks import as_generator, check_bool, check_optimizer_of, int_at_least
from gpudense.backends import backend_name_of
from gpudense.data import Dataset
from gpudense.datasets import Rows
from gpudense.history import EpochStats, History
from gpudense.losses import check_labels, softmax_cross_entropy

__all__ = ["EVAL_BATCH", "DataOnHostWarning", "DivergenceError", "EpochStats", "History", "TrainConfig",
           "evaluate", "fit", "to_device", "train_epoch"]

#: Samples per forward pass in :func:`evaluate`.
EVAL_BATCH = 8192

#: NVTX range names opened with ``TrainConfig(profile=True)``.
EPOCH_RANGE = "gpudense.train.epoch"
STEP_RANGE = "gpudense.train.step"


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`fit` trains.

    Attributes:
        epochs: Total epochs, counting those before ``start_epoch``; >= 0.
        batch_size: Samples per optimizer step, >= 1; the last batch of an
            epoch may be smaller.
        rng: The generator that shuffles the training set at the start of
            every epoch: a ``numpy.random.Generator`` (advanced in place; save
            its state to resume), an int seed, or None (fresh entropy).
        profile: Wrap every epoch, every step and the layers' stages in NVTX
            ranges (``gpudense.train.epoch`` / ``gpudense.train.step``, and
            ``backend.profiled``; a no-op without a profiler).

    Raises:
        ValueError, TypeError: a value out of range or of the wrong type.

    Example:
        >>> TrainConfig(epochs=20, batch_size=64, rng=0).batch_size
        64
    """

    epochs: int
    batch_size: int = 32
    rng: Any = None
    profile: bool = False

    def __post_init__(self) -> None:
        int_at_least("epochs", self.epochs, 0)
        int_at_least("batch_size", self.batch_size, 1)
        if not isinstance(self.rng, np.random.Generator):
            as_generator(self.rng, "rng")  # checks a seed or None
        check_bool("profile", self.profile)


class DivergenceError(RuntimeError):
    """The mean training loss of an epoch is not finite (inf or NaN); training stopped.

    Attributes:
        epoch: The epoch, counted from 1.
        loss: Its mean loss.
        lr: The optimizer's learning rate (None if it has none).
    """

    def __init__(self, epoch: int, loss: float, lr: float | None) -> None:
        self.epoch, self.loss, self.lr = epoch, loss, lr
        used = "" if lr is None else f" (this run used {lr:g})"
        super().__init__(
            f"training diverged in epoch {epoch}: the mean loss is {loss}; try a lower learning rate{used}"
        )


class DataOnHostWarning(RuntimeWarning):
    """:func:`to_device` kept a part of the data on the host: the device has no room for it.

    Attributes:
        part: ``"train"`` or ``"test"``.
    """

    def __init__(self, message: str, part: str) -> None:
        super().__init__(message)
        self.part = part


def to_device(data: Dataset, backend: Any) -> Dataset:
    """``data`` with its train and test arrays copied to ``backend`` where they fit.

    A part (``x_train`` with ``y_train``, ``x_test`` with ``y_test``) that
    does not fit in device memory stays on the host, with a
    :class:`DataOnHostWarning`; :func:`fit` and :func:`evaluate` then stream
    it batch by batch (:meth:`~gpudense.backends.Backend.batches`). On the
    NumPy backend nothing is copied (:class:`~gpudense.datasets.Rows` of a
    memory-mapped file stay there, read batch by batch).

    Args:
        data: A dataset with host (or already device) arrays.
        backend: A :class:`~gpudense.backends.Backend`, e.g. ``model.backend``.

    Returns:
        A new :class:`~gpudense.data.Dataset` (``data`` is unchanged).

    Example:
        >>> from gpudense import get_backend
        >>> from gpudense.data import make_synthetic
        >>> to_device(make_synthetic(100, 4, 2), get_backend("numpy")).x_train.shape
        (80, 4)
    """
    parts: dict[str, Any] = {}
    for part in ("train", "test"):
        x, y = getattr(data, f"x_{part}"), getattr(data, f"y_{part}")
        try:
            x, y = (x.to(backend) if isinstance(x, Rows) else backend.asarray(x)), backend.asarray(y)
        except MemoryError:  # cupy.cuda.memory.OutOfMemoryError is a MemoryError
            warnings.warn(DataOnHostWarning(
                f"gpudense: the {part} set ({x.nbytes / 2**20:,.0f} MiB) does not fit on the device; "
                "it stays on the host and is copied batch by batch", part), stacklevel=2)
        parts[f"x_{part}"], parts[f"y_{part}"] = x, y
    return dataclasses.replace(data, **parts)


class _OneProcess:
    """The hooks of a run in one process: all rows here, nothing to sum with other ranks."""

    @staticmethod
    def rows(n: int) -> tuple[int, int]:
        return 0, n

    @staticmethod
    def reduce_grads() -> None:
        pass

    @staticmethod
    def reduce_sums(sums: Any) -> None:
        pass


_ONE_PROCESS = _OneProcess()


def evaluate(model: Any, x: Any, y: Any, *, batch_size: int = EVAL_BATCH, parallel: Any = None) -> float:
    """Accuracy of ``model``'s argmax predictions on ``x`` against integer labels ``y``.

    Args:
        model: A network with ``backend`` and ``__call__`` (e.g. :class:`~gpudense.nn.MLP`).
        x: Features ``(n, n_features)``, on the host or the model's backend
            (host batches are copied one at a time).
        y: Integer labels ``(n,)``, alongside ``x``.
        batch_size: Samples per forward pass.
        parallel: The hooks of a data-parallel run (see :func:`train_epoch`):
            this rank counts its rows of ``x``, the counts are summed over
            the ranks. None: one process.

    Returns:
        The fraction of correct predictions; an empty set is a ValueError (the
        accuracy of nothing is undefined), as the losses refuse an empty batch.

    Example:
        >>> from gpudense.nn import MLP
        >>> model = MLP([2, 2], backend="numpy", rng=0)
        >>> acc = evaluate(model, np.ones((4, 2), np.float32), np.array([0, 1, 0, 1]))
        >>> acc  # every row is the same, so the argmax is right for half of them
        0.5
    """
    hooks = _ONE_PROCESS if parallel is None else parallel
    backend = model.backend
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("evaluate needs a non-empty set (the accuracy of nothing is undefined); got x of "
                         f"shape {tuple(x.shape)}")
    lo, hi = hooks.rows(n)
    rows = None if (lo, hi) == (0, n) else (backend.xp if _on_backend(backend, "x", x) else np).arange(lo, hi)
    correct = backend.xp.zeros(1, dtype=np.float64)
    for xb, yb in backend.batches(x, y, rows, batch_size):
        correct[0] += (model(xb).argmax(axis=1) == yb).sum()
    hooks.reduce_sums(correct)
    return int(correct[0]) / n


def _no_range(name: str) -> ContextManager[Any]:
    return contextlib.nullcontext()


def train_epoch(
    model: Any,
    optimizer: Any,
    x: Any,
    y: Any,
    order: Any,
    *,
    batch_size: int,
    ranges: Callable[[str], ContextManager[Any]] | None = None,
    on_batch: Callable[[int, int, Any, Any], None] | None = None,
    parallel: Any = None,
) -> tuple[Any, Any]:
    """One epoch of mini-batch training with softmax cross-entropy.

    Args:
        model: A network (e.g. :class:`~gpudense.nn.MLP`) on some backend.
        optimizer: Its optimizer; stepped once per batch, then gradients are cleared.
        x, y: Features ``(n, n_features)`` and int labels ``(n,)``, either on
            the model's backend (then ``order`` must be too) or on the host
            (then each batch is copied to the device as it is used). Labels
            must already be valid (:func:`~gpudense.losses.check_labels`).
        order: The sample indices in the order to visit, e.g. a permutation.
        batch_size: Samples per step; the last batch may be smaller.
        ranges: ``name -> context manager`` wrapped around every step
            (``backend.nvtx_range`` to profile).
        on_batch: Called after each step as ``on_batch(step, seen, loss_sum, correct)``.
        parallel: The hooks of a data-parallel run, e.g. a
            :class:`gpudense.distributed.DataParallel`: ``rows(n) -> (start,
            stop)``, the rows of each batch this process takes;
            ``reduce_grads()``, called after backward; ``reduce_sums(a)``,
            which sums a float64 array over the processes in place. Then
            ``batch_size`` is the global batch, each process scales its
            loss gradient by its share of the batch, and the sums are those
            of all processes. None: one process.

    Returns:
        ``(loss_sum, correct)``: 0-d float64 arrays on the model's backend,
        the sum of per-sample losses and the count of correct predictions
        made during the epoch. Nothing waits for the device until they are read.

    Example:
        >>> from gpudense.nn import MLP
        >>> from gpudense.optim import SGD
        >>> model = MLP([2, 3], backend="numpy", rng=0)
        >>> x, y = np.ones((5, 2), np.float32), np.array([0, 1, 2, 0, 1])
        >>> seen = []
        >>> loss_sum, correct = train_epoch(model, SGD(model), x, y, np.arange(5), batch_size=2,
        ...                                 on_batch=lambda step, n, loss, c: seen.append(n))
        >>> seen, loss_sum.shape
        ([2, 4, 5], ())
    """
    hooks = _ONE_PROCESS if parallel is None else parallel
    backend = model.backend
    xp = backend.xp
    ranges = ranges or _no_range
    sums = xp.zeros(2, dtype=np.float64)  # this step's loss sum and correct count (of all processes)
    totals = xp.zeros(2, dtype=np.float64)
    n = int(order.shape[0])
    if parallel is None:  # whole batches, sliced where the data lie or streamed to the device (Backend.batches)
        batches = backend.batches(x, y, order, batch_size)
    else:  # this process's rows of each batch
        batches = (_rows_of(backend, x, y, order[start:start + batch_size], hooks) for start in range(0, n, batch_size))
    for step, (xb, yb) in enumerate(batches):
        with ranges(STEP_RANGE):
            start = step * batch_size
            rows = min(batch_size, n - start)
            share = int(xb.shape[0])  # this process's rows of the batch (all of them in one process)
            logits = model(xb)
            if share:
                loss, dlogits = softmax_cross_entropy(logits, yb, check=False)
                if share < rows:
                    dlogits *= share / rows  # the gradient of this process's share of the batch's mean
                sums[0] = loss * share
                sums[1] = (logits.argmax(axis=1) == yb).sum()
            else:  # no rows here: zero gradients, still summed with the others
                dlogits = xp.zeros_like(logits)
                sums[...] = 0
            model.backward(dlogits)
            hooks.reduce_grads()
            hooks.reduce_sums(sums)
            optimizer.step()
            optimizer.zero_grad()
            totals += sums
        if on_batch is not None:
            on_batch(step, start + rows, totals[0], totals[1])
    return totals[0], totals[1]


def _rows_of(backend: Any, x: Any, y: Any, idx: Any, hooks: Any) -> tuple[Any, Any]:
    """The rows of the batch ``idx`` that this process takes (``hooks.rows``), on ``backend``."""
    lo, hi = hooks.rows(int(idx.shape[0]))
    idx = idx[lo:hi]
    return backend.asarray(x[idx]), backend.asarray(y[idx])  # no copy when x is on the backend already


def _on_backend(backend: Any, name: str, a: Any) -> bool:
    """Whether ``a`` lies on ``backend`` (False: on the host); TypeError for anything else."""
    if isinstance(a, Rows):
        return False
    kind = backend_name_of(a)
    if kind != backend.name and kind != "numpy":
        raise TypeError(f"data {name} must be on the host or on the model's {backend.name} backend; got {kind}")
    return kind == backend.name


def fit(
    model: Any,
    optimizer: Any,
    data: Dataset,
    config: TrainConfig,
    *,
    start_epoch: int = 0,
    history: History | None = None,
    on_epoch: Callable[[EpochStats, History], None] | None = None,
    on_batch: Callable[[int, int, int, Any, Any], None] | None = None,
    comm: Any = None,
) -> History:
    """Train ``model`` with ``optimizer`` on ``data`` for epochs ``start_epoch + 1 .. config.epochs``.

    Each epoch shuffles the training set with ``config.rng``, runs
    :func:`train_epoch`, stops with :class:`DivergenceError` if the mean loss
    is not finite (before ``on_epoch``, so a checkpoint saved there is never
    one of a diverged model), evaluates the test accuracy, appends to the
    history and calls ``on_epoch``. NumPy's overflow warnings are silenced
    meanwhile: a loss that overflows ends the run with that one error.

    Args:
        model: A network with ``backend``, ``__call__``, ``backward``,
            ``param_grads`` and ``zero_grad`` (e.g. :class:`~gpudense.nn.MLP`);
            its outputs are the class scores.
        optimizer: An :class:`~gpudense.optim.Optimizer` of ``model``.
        data: A :class:`~gpudense.data.Dataset` with at least one training
            sample; its arrays on the host or on the model's backend (see
            :func:`to_device`). Labels must lie in ``[0, data.n_classes)``.
        config: A :class:`TrainConfig`.
        start_epoch: Epochs already done (a resumed run: the checkpoint's
            epoch); no epoch runs when it is >= ``config.epochs``.
        history: The history of those epochs; the returned history extends a copy.
        on_epoch: Called after each epoch as ``on_epoch(stats, history)``.
        on_batch: Called after each step as
            ``on_batch(epoch, step, seen, loss_sum, correct)``: the epoch
            (from 1), the step within it (from 0), samples seen in it so far,
            and the running loss sum and correct count (0-d device arrays;
            reading them waits for the device, so read them rarely).
        comm: A :class:`~gpudense.distributed.Communicator`: data-parallel training over its
            ranks (``batch_size`` is the global batch). The loop is the same; it calls the
            hooks of ``comm.data_parallel(...)`` (:class:`~gpudense.distributed.DataParallel`).

    Returns:
        The :class:`History`, earlier epochs included.

    Raises:
        DivergenceError: an epoch's mean loss is inf or NaN.
        TypeError, ValueError: bad arguments or labels.

    Example:
        >>> from gpudense.data import make_synthetic
        >>> from gpudense.nn import MLP
        >>> from gpudense.optim import SGD
        >>> model = MLP([4, 2], backend="numpy", rng=0)
        >>> seen = []
        >>> h = fit(model, SGD(model), make_synthetic(50, 4, 2), TrainConfig(epochs=2, rng=0),
        ...         on_epoch=lambda stats, history: seen.append(stats.epoch))
        >>> seen, len(h.loss)
        ([1, 2], 2)
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    int_at_least("start_epoch", start_epoch, 0)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a History or None; got {type(history).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a gpudense.data.Dataset; got {type(data).__name__}")
    check_optimizer_of(optimizer, model)
    backend = model.backend
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    resident = _on_backend(backend, "x_train", x_train)
    if _on_backend(backend, "y_train", y_train) != resident and not isinstance(x_train, Rows):
        raise TypeError("data x_train and y_train must lie together, both on the host or both on the device")
    _on_backend(backend, "x_test", x_test)
    _on_backend(backend, "y_test", y_test)
    n = int(x_train.shape[0])
    if n == 0:
        raise ValueError("data has no training samples")
    if int(x_test.shape[0]) == 0:
        raise ValueError("data has no test samples; each epoch ends by evaluating the test set")
    check_labels(y_train, n, data.n_classes)
    check_labels(y_test, int(x_test.shape[0]), data.n_classes)
    history = History(**history.as_dict()) if history is not None else History()
    shuffle = as_generator(config.rng, "rng")
    ranges = backend.nvtx_range if config.profile else _no_range
    parallel = None
    if comm is not None:
        if not callable(getattr(comm, "data_parallel", None)):
            raise TypeError(f"comm must be a gpudense.distributed.Communicator; got {type(comm).__name__}")
        parallel = comm.data_parallel(model, optimizer, data=data, config=config, shuffle=shuffle,
                                      start_epoch=start_epoch)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), backend.profiled(config.profile):
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            perm = shuffle.permutation(n)
            order = backend.asarray(perm) if resident else perm
            batch_done = None if on_batch is None else functools.partial(on_batch, epoch)
            with ranges(EPOCH_RANGE):
                loss_sum, correct = train_epoch(model, optimizer, x_train, y_train, order, batch_size=config.batch_size,
                                                ranges=ranges, on_batch=batch_done, parallel=parallel)
            loss = float(loss_sum) / n  # waits for the device
            train_acc = int(correct) / n
            seconds = time.perf_counter() - t0
            if not math.isfinite(loss):
                raise DivergenceError(epoch, loss, getattr(optimizer, "lr", None))
            test_acc = evaluate(model, x_test, y_test, parallel=parallel)
            history.loss.append(loss)
            history.train_acc.append(train_acc)
            history.test_acc.append(test_acc)
            history.seconds.append(seconds)
            if on_epoch is not None:
                on_epoch(EpochStats(epoch, config.epochs, loss, train_acc, test_acc, seconds, n), history)
    return history

