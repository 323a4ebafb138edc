"""``gpudense train`` under a launcher: starting the communicator, rank 0's share of the work, the batch split."""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from gpudense.distributed.comm import Communicator
from gpudense.distributed.parallel import split_rows


def on_rank0(comm: Communicator | None, fn: Any) -> Any:
    """``fn()`` on rank 0 alone, its result (or its error, on every rank) shared; ``fn()`` without ``comm``."""
    if comm is None:
        return fn()
    from gpudense.distributed import run_on_root

    return run_on_root(comm, fn)


def split_note(batch: int, size: int) -> str:
    """How a global batch is split, e.g. ``"the batch of 32 is split across them, 16 rows per rank"``.

    Example:
        >>> split_note(32, 3)
        'the batch of 32 is split across them, 11 or 10 rows per rank (lower ranks more)'
        >>> split_note(32, 1)
        'its one rank takes the whole batch of 32'
    """
    if size == 1:
        return f"its one rank takes the whole batch of {batch}"
    most, fewest = (b - a for a, b in (split_rows(batch, size, 0), split_rows(batch, size, size - 1)))
    rows = f"{most} rows per rank" if most == fewest else f"{most} or {fewest} rows per rank (lower ranks more)"
    return f"the batch of {batch} is split across them, {rows}"


def start_distributed(args: argparse.Namespace) -> Communicator | None:
    """The communicator ``--distributed`` asks for (None: train alone); every rank calls it.

    ``auto`` starts MPI only where a launcher says it started more than one
    process, and then insists that MPI sees them all (an mpi4py built for
    another MPI than the launcher's sees a world of one: N copies of the
    same run would follow).
    """
    from gpudense import distributed

    if args.distributed == "off":
        return None
    launched = distributed.launched_world_size()
    if args.distributed == "auto" and (launched is None or launched <= 1):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comm = distributed.init(args.distributed, backend=args.backend)
    if comm.rank == 0:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.distributed == "auto" and comm.size != launched:
        raise distributed.CollectiveError(
            f"the launcher started {launched} processes but MPI sees {comm.size} ({comm.describe()}): "
            "mpi4py's MPI is not the launcher's; use the mpiexec of that MPI, or --distributed off "
            "for independent runs"
        )
    return comm
