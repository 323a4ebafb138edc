"""The communicator seam: what data-parallel training asks of an engine, checked once.

:class:`Communicator` is the interface (rank, size, in-place ``allreduce`` and
``broadcast`` of arrays, ``barrier``, a few small Python objects for the
start-up checks, ``abort``). Its public methods check their arguments here,
once, and call the engine's ``_allreduce_sum`` / ``_broadcast``; the engines
are :class:`~gpudense.distributed.mpi.MPICommunicator` (mpi4py) and
:class:`~gpudense.distributed.nccl.NCCLCommunicator` (NCCL through CuPy).
:class:`LocalCommunicator` is the world of one process, where every
collective is the identity. :meth:`Communicator.data_parallel` gives the
hooks that make :func:`gpudense.training.fit`'s loop data-parallel
(:mod:`gpudense.distributed.parallel`).
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np

from gpudense._checks import array_kind, describe_array
from gpudense.distributed.parallel import DataParallel

#: Reductions :meth:`Communicator.allreduce` accepts.
OPS = ("sum", "mean")


class Communicator:
    """A group of ``size`` processes, this one being ``rank``; collectives on arrays in place.

    Every rank must call the same collectives in the same order with arrays
    of the same shape and dtype (as in MPI). Arrays are changed in place and
    returned; they must be C-contiguous. Which array kinds an engine takes is
    in ``array_kinds`` (``"numpy"``, ``"cupy"``).

    Attributes:
        kind: ``"local"``, ``"mpi"`` or ``"nccl"``.
        rank: This process, in ``[0, size)``.
        size: The number of processes.
    """

    kind: str = ""
    array_kinds: tuple[str, ...] = ("numpy",)
    rank: int = 0
    size: int = 1

    # -- arrays ----------------------------------------------------------------
    def allreduce(self, a: Any, op: str = "sum") -> Any:
        """Replace ``a`` on every rank by the element-wise sum (or mean) of ``a`` over all ranks.

        Args:
            a: A C-contiguous NumPy or CuPy array (as ``array_kinds`` allows),
                of the same shape and dtype on every rank.
            op: ``"sum"`` or ``"mean"`` (the sum divided by ``size``; floating
                arrays only).

        Returns:
            ``a``, reduced in place.

        Raises:
            TypeError: an array this engine does not take, or ``"mean"`` of integers.
            ValueError: an unknown ``op``, a non-contiguous or a read-only array.

        Example:
            >>> a = np.array([1.0, 2.0])
            >>> LocalCommunicator().allreduce(a, op="mean")
            array([1., 2.])
        """
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}; got {op!r}")
        self._check_array("allreduce", a)
        if op == "mean" and np.dtype(a.dtype).kind != "f" and np.dtype(a.dtype).name != "bfloat16":
            raise TypeError(f"allreduce(op='mean') needs a floating array; got dtype {a.dtype}")
        if self.size > 1 and a.size:
            self._allreduce_sum(a)
            if op == "mean":
                a /= self.size
        return a

    def broadcast(self, a: Any, root: int = 0) -> Any:
        """Copy ``a`` of rank ``root`` into ``a`` of every other rank.

        Args:
            a: A C-contiguous array of the same shape and dtype on every rank.
            root: The rank whose values everyone gets.

        Returns:
            ``a``, overwritten in place (unchanged on ``root``).

        Example:
            >>> LocalCommunicator().broadcast(np.arange(3))
            array([0, 1, 2])
        """
        self._check_root(root)
        self._check_array("broadcast", a)
        if self.size > 1 and a.size:
            self._broadcast(a, root)
        return a

    def barrier(self) -> None:
        """Wait until every rank has called ``barrier`` (and, on a GPU, its queued work is done)."""

    # -- training ----------------------------------------------------------------
    def data_parallel(self, model: Any, optimizer: Any, **setup: Any) -> DataParallel:
        """The hooks of a data-parallel run of ``model`` over these ranks (collective): a :class:`DataParallel`.

        :func:`gpudense.training.fit` calls this when given ``comm=``; the
        keyword arguments are :class:`DataParallel`'s (``data``, ``config``,
        ``shuffle``, ``start_epoch``).

        Example:
            >>> from gpudense.data import make_synthetic
            >>> from gpudense.nn import MLP
            >>> from gpudense.optim import SGD
            >>> from gpudense.training import TrainConfig
            >>> model = MLP([4, 2], backend="numpy", rng=0)
            >>> dp = LocalCommunicator().data_parallel(model, SGD(model), data=make_synthetic(20, 4, 2),
            ...                                        config=TrainConfig(epochs=1), shuffle=np.random.default_rng(0))
            >>> dp.rows(32)
            (0, 32)
        """
        return DataParallel(model, optimizer, self, **setup)

    # -- small Python objects (start-up checks, checkpoints) ---------------------
    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), as a list indexed by rank, on every rank."""
        return [obj]

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``obj`` (picklable), returned on every rank."""
        self._check_root(root)
        return obj

    def abort(self, code: int = 1) -> NoReturn:
        """End every process of the group now with exit status ``code`` (no clean-up)."""
        raise SystemExit(code)

    def describe(self) -> str:
        """One line for people: the engine and the number of ranks."""
        return f"{self.kind}, {self.size} rank{'s' if self.size != 1 else ''}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} rank {self.rank} of {self.size}>"

    # -- what an engine implements ---------------------------------------------
    def _allreduce_sum(self, a: Any) -> None:
        """Sum ``a`` over all ranks, in place (``a`` is checked, non-empty, size > 1)."""
        raise NotImplementedError

    def _broadcast(self, a: Any, root: int) -> None:
        """Copy ``a`` of ``root`` to all ranks, in place (``a`` is checked, non-empty, size > 1)."""
        raise NotImplementedError

    # -- checks ------------------------------------------------------------------
    def _check_array(self, what: str, a: Any) -> None:
        kind = array_kind(a)
        if kind not in self.array_kinds:
            takes = " or ".join(f"{k}.ndarray" for k in self.array_kinds)
            raise TypeError(f"the {self.kind} communicator's {what} takes a {takes}; got {describe_array(a)}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{what} needs a C-contiguous array (it works in place); got a strided {describe_array(a)}")
        if not getattr(a.flags, "writeable", True):  # CuPy arrays have no read-only flag
            raise ValueError(f"{what} writes its result into the array it is given, which is read-only; got a "
                             f"read-only {describe_array(a)} (pass a writable copy, a.copy())")

    def _check_root(self, root: Any) -> None:
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in [0, {self.size}); got {root!r}")


class LocalCommunicator(Communicator):
    """The world of this one process: rank 0 of 1; every collective leaves its arrays as they are.

    Training through it (``fit(..., comm=LocalCommunicator())``) runs the
    data-parallel code path and gives exactly the single-process results.

    Example:
        >>> comm = LocalCommunicator()
        >>> comm.rank, comm.size, comm.allgather_object("x")
        (0, 1, ['x'])
    """

    kind = "local"
    array_kinds = ("numpy", "cupy")
