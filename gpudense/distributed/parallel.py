"""Data-parallel training: every rank holds the model, takes its part of every batch, and sums gradients.

:class:`DataParallel` is what :func:`gpudense.training.fit` runs when given
``comm=``. At the start (collectively) the ranks compare a fingerprint of
their set-up (:func:`fingerprint`; a difference is a :class:`MismatchError`
on every rank), and rank 0's parameters and optimizer state are broadcast.

Each step of an epoch (the same shuffled order on every rank, from the same
seed): the global batch of ``batch_size`` rows is split across the ranks by
:func:`~gpudense.distributed.comm.split_rows` (ranks ``0 .. r-1`` take one
row more when it does not divide; a rank takes 0 rows when the batch is
smaller than the world, and still joins the all-reduce). Each rank runs
forward and backward on its rows with the loss gradient scaled by
``rows / batch``, so the gradients summed over the ranks are those of the
mean loss over the global batch; then one all-reduce per gradient bucket
(:class:`~gpudense.distributed.buckets.GradientBuckets`) and one of two
numbers (the step's loss sum and correct count), and the optimizer steps
alike on every rank. The results equal single-process training with the same
batch up to the order of additions.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Callable, ContextManager

import numpy as np

from gpudense.distributed.buckets import DEFAULT_BUCKET_BYTES, GradientBuckets
from gpudense.distributed.comm import Communicator, MismatchError, split_rows
from gpudense.losses import softmax_cross_entropy
from gpudense.training import EVAL_BATCH, STEP_RANGE, _no_range

_HINTS = {
    "shuffle": "every rank must shuffle alike: give every rank the same seed",
    "data": "every rank must load the same data",
}


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def fingerprint(model: Any, optimizer: Any, data: Any, config: Any, shuffle: np.random.Generator,
                start_epoch: int) -> dict[str, Any]:
    """What must be alike on every rank of a data-parallel run, as a flat dict of plain values.

    Keys are dotted paths: the backend, the model's configuration, every
    parameter's name, shape and dtype, the optimizer's type,
    hyper-parameters, step counts and state slots, the epochs, batch size
    and start epoch, the data's shapes, dtypes and a checksum of its labels,
    and a checksum of the shuffling generator's state.

    Example:
        >>> from gpudense.data import make_synthetic
        >>> from gpudense.nn import MLP
        >>> from gpudense.optim import SGD
        >>> from gpudense.training import TrainConfig
        >>> model = MLP([4, 2], backend="numpy", rng=0)
        >>> fp = fingerprint(model, SGD(model), make_synthetic(20, 4, 2), TrainConfig(epochs=1),
        ...                  np.random.default_rng(0), 0)
        >>> fp["training.batch_size"], fp["parameters.0.w"]
        (32, [[4, 2], 'float32'])
    """
    be = model.backend
    model_config = getattr(model, "config", None)
    fp: dict[str, Any] = {
        "backend": be.name,
        "model": model_config() if callable(model_config) else type(model).__name__,
        "optimizer.type": type(optimizer).__name__,
        "optimizer.step": getattr(optimizer, "step_count", None),
        "optimizer.param_steps": dict(sorted(getattr(optimizer, "param_steps", {}).items())),
        "optimizer.state": {slot: sorted(a) for slot, a in sorted(getattr(optimizer, "state", {}).items())},
        "training.epochs": config.epochs,
        "training.batch_size": config.batch_size,
        "training.start_epoch": start_epoch,
        "data.n_classes": data.n_classes,
        "shuffle": _crc(json.dumps(shuffle.bit_generator.state, sort_keys=True).encode()),
    }
    for pg in model.param_grads():
        fp[f"parameters.{pg.name}"] = [list(pg.param.shape), str(pg.param.dtype)]
    for name, value in sorted(getattr(optimizer, "hyperparams", {}).items()):
        fp[f"optimizer.hyperparams.{name}"] = value
    for part in ("x_train", "y_train", "x_test", "y_test"):
        a = getattr(data, part)
        fp[f"data.{part}"] = [list(a.shape), str(a.dtype)]
    labels = b"".join(np.ascontiguousarray(be.to_numpy(data.y_train if k else data.y_test)).tobytes()
                      for k in (1, 0))
    fp["data.labels_crc32"] = _crc(labels)
    return fp


def check_same_setup(comm: Communicator, fp: dict[str, Any]) -> None:
    """Compare this rank's fingerprint with every other rank's (collective).

    Raises:
        MismatchError: on every rank, naming the first key that differs, its
            value on rank 0 and on the first rank that differs.
    """
    every = comm.allgather_object(fp)
    first = every[0]
    for r, other in enumerate(every[1:], 1):
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                hint = _HINTS.get(key.split(".")[0])
                raise MismatchError(
                    f"the ranks do not run the same training: {key} is {first.get(key)!s:.120} on rank 0 "
                    f"but {other.get(key)!s:.120} on rank {r}" + (f" ({hint})" if hint else "")
                )


class DataParallel:
    """Data-parallel training of ``model`` over ``comm``: the start-up checks, the epoch and the evaluation.

    Creating it is collective: the set-up fingerprints are compared
    (:func:`check_same_setup`), then rank 0's parameters and optimizer state
    are broadcast to every rank.

    Args:
        model: A network with ``backend``, ``__call__``, ``backward`` and
            ``param_grads`` (e.g. :class:`~gpudense.nn.MLP`).
        optimizer: Its optimizer.
        comm: A :class:`~gpudense.distributed.Communicator` that takes the
            model's arrays.
        data: The :class:`~gpudense.data.Dataset` (the whole set, on every rank).
        config: The :class:`~gpudense.training.TrainConfig`.
        shuffle: The generator that will shuffle every epoch (its state is compared).
        start_epoch: Epochs already done.
        bucket_bytes: Gradient bucket capacity.

    Raises:
        TypeError: ``comm`` is not a Communicator, or does not take the model's arrays.
        MismatchError: the ranks' set-ups differ (on every rank).

    Example:
        >>> from gpudense.data import make_synthetic
        >>> from gpudense.distributed import LocalCommunicator
        >>> from gpudense.nn import MLP
        >>> from gpudense.optim import SGD
        >>> from gpudense.training import TrainConfig
        >>> model = MLP([4, 2], backend="numpy", rng=0)
        >>> data = make_synthetic(20, 4, 2)
        >>> dp = DataParallel(model, SGD(model), LocalCommunicator(), data=data,
        ...                   config=TrainConfig(epochs=1), shuffle=np.random.default_rng(0))
        >>> dp.buckets
        GradientBuckets(1 bucket: 10 x float32)
    """

    def __init__(self, model: Any, optimizer: Any, comm: Communicator, *, data: Any, config: Any,
                 shuffle: np.random.Generator, start_epoch: int = 0,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a gpudense.distributed.Communicator; got {type(comm).__name__}")
        backend = model.backend
        if backend.name not in comm.array_kinds:
            raise TypeError(f"the {comm.kind} communicator takes {' or '.join(comm.array_kinds)} arrays; "
                            f"the model is on the {backend.name} backend")
        self.model, self.optimizer, self.comm = model, optimizer, comm
        self.buckets = GradientBuckets(model, comm, bucket_bytes=bucket_bytes)
        check_same_setup(comm, fingerprint(model, optimizer, data, config, shuffle, start_epoch))
        self.buckets.broadcast_params(0)
        for slot, arrays in sorted(getattr(optimizer, "state", {}).items()):
            for name in sorted(arrays):
                comm.broadcast(arrays[name], 0)
        self._stats = backend.xp.zeros(2, dtype=np.float64)

    def train_epoch(self, model: Any, optimizer: Any, x: Any, y: Any, order: Any, *, batch_size: int,
                    ranges: Callable[[str], ContextManager[Any]] | None = None,
                    on_batch: Callable[[int, int, Any, Any], None] | None = None) -> tuple[Any, Any]:
        """One epoch, as :func:`gpudense.training.train_epoch`, with ``batch_size`` the global batch.

        ``order`` is the epoch's order of all samples, alike on every rank;
        this rank reads only its rows of each batch.

        Returns:
            ``(loss_sum, correct)`` over all ranks: 0-d float64 arrays on the
            model's backend (alike on every rank). ``on_batch`` gets the
            samples seen by all ranks and these running sums.
        """
        comm, backend = self.comm, model.backend
        xp = backend.xp
        ranges = ranges or _no_range
        stats, totals = self._stats, xp.zeros(2, dtype=np.float64)
        n = int(order.shape[0])
        for step, start in enumerate(range(0, n, batch_size)):
            with ranges(STEP_RANGE):
                rows = min(batch_size, n - start)
                lo, hi = split_rows(rows, comm.size, comm.rank)
                idx = order[start + lo:start + hi]
                xb = backend.asarray(x[idx])  # no copy when x is on the backend already
                yb = backend.asarray(y[idx])
                logits = model(xb)
                if hi > lo:
                    loss, dlogits = softmax_cross_entropy(logits, yb, check=False)
                    dlogits *= (hi - lo) / rows  # the gradient of this rank's share of the global mean
                    stats[0] = loss * (hi - lo)
                    stats[1] = (logits.argmax(axis=1) == yb).sum()
                else:  # no rows here: zero gradients, still all-reduced with the others
                    dlogits = xp.zeros_like(logits)
                    stats[...] = 0
                model.backward(dlogits)
                self.buckets.allreduce()
                comm.allreduce(stats)
                optimizer.step()
                optimizer.zero_grad()
                totals += stats
            if on_batch is not None:
                on_batch(step, start + rows, totals[0], totals[1])
        return totals[0], totals[1]

    def evaluate(self, model: Any, x: Any, y: Any, *, batch_size: int = EVAL_BATCH) -> float:
        """Accuracy on ``(x, y)``, as :func:`gpudense.training.evaluate`; each rank counts its rows.

        Returns:
            The fraction correct over all rows (alike on every rank); NaN for an empty set.
        """
        backend = model.backend
        n = int(x.shape[0])
        if n == 0:
            return float("nan")
        lo, hi = split_rows(n, self.comm.size, self.comm.rank)
        counts = backend.xp.zeros(1, dtype=np.float64)
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            xb, yb = backend.asarray(x[start:stop]), backend.asarray(y[start:stop])
            counts[0] += (model(xb).argmax(axis=1) == yb).sum()
        self.comm.allreduce(counts)
        return int(counts[0]) / n
