"""In-process stand-ins for a world of several ranks, to test the data-parallel code without MPI.

Imported by the tests of this folder through ``importlib`` (see ``load_fakes``
in each test module); pytest's doctest collection imports it too, harmlessly.
"""

from __future__ import annotations

from typing import Any

from gpudense.distributed import Communicator


class Mirror(Communicator):
    """Rank ``rank`` of ``size`` identical ranks: a sum multiplies by ``size``, a broadcast keeps the values.

    Every array passed to a collective is recorded in ``seen`` (the array
    itself), and ``objects`` replaces the all-gathered list (rank order)
    when given.
    """

    kind = "mirror"
    array_kinds = ("numpy", "cupy")

    def __init__(self, size: int = 2, rank: int = 0, objects: list[Any] | None = None) -> None:
        self.size, self.rank, self.objects = size, rank, objects
        self.seen: list[Any] = []

    def _allreduce_sum(self, a: Any) -> None:
        self.seen.append(a)
        a *= self.size

    def _broadcast(self, a: Any, root: int) -> None:
        self.seen.append(a)

    def allgather_object(self, obj: Any) -> list[Any]:
        return list(self.objects) if self.objects is not None else [obj] * self.size

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        self._check_root(root)
        return obj
