"""Data-parallel training: every rank holds the model, takes its part of every batch, and sums gradients.

:class:`DataParallel` holds the hooks that :func:`gpudense.training.fit`'s
one loop calls when given ``comm=`` (it gets them from
:meth:`Communicator.data_parallel <gpudense.distributed.comm.Communicator.data_parallel>`),
as ChainerMN wraps an optimizer rather than rewriting the updater. Creating
it is collective: the ranks compare a fingerprint of their set-up
(:func:`fingerprint`; a difference is a :class:`MismatchError` on every
rank), and rank 0's parameters and optimizer state are broadcast.

Each step of an epoch (the same shuffled order on every rank, from the same
seed): the global batch of ``batch_size`` rows is split across the ranks by
:func:`split_rows` (:meth:`DataParallel.rows`; ranks ``0 .. r-1`` take one
row more when it does not divide; a rank takes 0 rows when the batch is
smaller than the world, and still joins the all-reduce). Each rank runs
forward and backward on its rows with the loss gradient scaled by
``rows / batch``, so the gradients summed over the ranks are those of the
mean loss over the global batch; then one all-reduce per gradient bucket
(:meth:`DataParallel.reduce_grads`, through
:class:`~gpudense.distributed.buckets.GradientBuckets`) and one of two
numbers (:meth:`DataParallel.reduce_sums`: the step's loss sum and correct
count), and the optimizer steps alike on every rank. The results equal
single-process training with the same batch up to the order of additions.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

from gpudense.distributed.buckets import DEFAULT_BUCKET_BYTES, GradientBuckets
from gpudense.distributed.errors import MismatchError

_HINTS = {
    "shuffle": "every rank must shuffle alike: give every rank the same seed",
    "data": "every rank must load the same data",
}


def split_rows(n: int, size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)``: the rows of ``n`` that rank ``rank`` of ``size`` takes.

    The rows are cut into ``size`` contiguous parts in rank order; with
    ``n = q * size + r``, ranks ``0 .. r-1`` take ``q + 1`` rows and the
    others ``q`` (as ``numpy.array_split``). A rank takes 0 rows when
    ``n < size``.

    Args:
        n: Rows to split, >= 0.
        size: Ranks, >= 1.
        rank: This rank, in ``[0, size)``.

    Returns:
        ``(start, stop)`` with ``0 <= start <= stop <= n``.

    Raises:
        ValueError: an argument out of range.

    Example:
        >>> [split_rows(32, 3, r) for r in range(3)]
        [(0, 11), (11, 22), (22, 32)]
        >>> split_rows(2, 3, 2)
        (2, 2)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0; got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be an int >= 1; got {size!r}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < size:
        raise ValueError(f"rank must be an int in [0, {size}); got {rank!r}")
    q, r = divmod(int(n), int(size))
    start = int(rank) * q + min(int(rank), r)
    return start, start + q + (1 if rank < r else 0)


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


def check_same_setup(comm: Any, fp: dict[str, Any]) -> None:
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
    """The hooks that make the training loop data-parallel over ``comm``: rows, gradient and metric sums.

    Creating it is collective: the set-up fingerprints are compared
    (:func:`check_same_setup`), then rank 0's parameters and optimizer state
    are broadcast to every rank. :func:`gpudense.training.train_epoch` and
    :func:`~gpudense.training.evaluate` then call :meth:`rows`,
    :meth:`reduce_grads` and :meth:`reduce_sums`.

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
        TypeError: ``comm`` does not take the model's arrays.
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

    def __init__(self, model: Any, optimizer: Any, comm: Any, *, data: Any, config: Any,
                 shuffle: np.random.Generator, start_epoch: int = 0,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        backend = model.backend
        if backend.name not in comm.array_kinds:
            raise TypeError(f"the {comm.kind} communicator takes {' or '.join(comm.array_kinds)} arrays; "
                            f"the model is on the {backend.name} backend")
        self.comm = comm
        self.buckets = GradientBuckets(model, comm, bucket_bytes=bucket_bytes)
        check_same_setup(comm, fingerprint(model, optimizer, data, config, shuffle, start_epoch))
        self.buckets.broadcast_params(0)
        for slot, arrays in sorted(getattr(optimizer, "state", {}).items()):
            for name in sorted(arrays):
                comm.broadcast(arrays[name], 0)

    def rows(self, n: int) -> tuple[int, int]:
        """``(start, stop)``: the rows of ``n`` (a batch, or the evaluation set) that this rank takes."""
        return split_rows(n, self.comm.size, self.comm.rank)

    def reduce_grads(self) -> None:
        """Sum the model's gradients over the ranks (after backward, before the optimizer step)."""
        self.buckets.allreduce()

    def reduce_sums(self, sums: Any) -> None:
        """Sum ``sums`` (a float64 array of running totals: loss, correct count) over the ranks, in place."""
        self.comm.allreduce(sums)
