"""Starting a distributed run and ending it cleanly: :func:`init`, :func:`abort_on_error`, :func:`run_on_root`.

A failed rank must not leave the others waiting in a collective forever.
Two cases:

* An error every rank raises at the same point (:class:`CollectiveError`:
  the ranks disagree on the set-up, rank 0 cannot read a checkpoint, the
  loss diverged): every rank ends normally, with the error.
* An error on some ranks only (an exception on one rank): the others would
  wait for it. :func:`abort_on_error` prints the error with the rank's
  number and calls ``MPI_Abort``, and the launcher ends every rank. A rank
  killed by a signal is seen by the launcher itself (MPICH's ``mpiexec``
  then ends the others at once and names the killed process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import struct
import sys
import time
import traceback
import warnings
from typing import Any, Callable, Iterator

import gpudense._env as _env
from gpudense.backends import get_backend
from gpudense.distributed.comm import Communicator
from gpudense.distributed.errors import CollectiveError
from gpudense.distributed.mpi import MPICommunicator

#: What :func:`init` accepts: pick for the backend, MPI, or NCCL.
KINDS = ("auto", "mpi", "nccl")

# Errors a person can act on: one line suffices (anything else also prints its traceback).
_PLAIN = (ValueError, TypeError, OSError, RuntimeError, MemoryError, ImportError, KeyboardInterrupt)


class DistributedFallbackWarning(RuntimeWarning):
    """``init("auto")`` on the CuPy backend could not use NCCL and uses MPI instead."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, _PLAIN):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def init(kind: str = "auto", *, backend: Any = "auto") -> Communicator:
    """Start the communicator of this process in the MPI world (every rank must call it).

    MPI starts first (mpi4py). On the CuPy backend each rank then takes its
    own GPU: its index among the ranks of its node, modulo the node's GPU
    count, becomes CuPy's current device. The ranks compare what they found
    (one small all-gather) and agree, so that a problem on one rank is an
    error on every rank instead of a hang.

    Args:
        kind: ``"auto"`` (NCCL on the CuPy backend, MPI on NumPy; MPI, with a
            :class:`DistributedFallbackWarning`, where NCCL cannot be used),
            ``"mpi"`` or ``"nccl"``.
        backend: The backend the model will use (a name or a Backend), as
            for :func:`gpudense.get_backend`; resolved here, before anything
            is allocated on a device.

    Returns:
        An :class:`~gpudense.distributed.mpi.MPICommunicator` or an
        :class:`~gpudense.distributed.nccl.NCCLCommunicator` over all ranks.

    Raises:
        ValueError: an unknown ``kind``.
        DistributedUnavailableError: mpi4py or MPI cannot be loaded (names
            the extra to install).
        CollectiveError: raised on every rank: a rank cannot use the backend,
            the ranks chose different backends, or ``kind="nccl"`` cannot run.

    Example (under a launcher, ``mpiexec -n 2 python script.py``)::

        comm = gpudense.distributed.init()
        history = fit(model, optimizer, data, config, comm=comm)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    mpi = MPICommunicator()
    report: dict[str, Any] = {"backend": None, "gpus": None, "ranks_here": mpi.local_size, "nccl": None,
                              "error": None}
    try:
        be = get_backend(backend)
        report["backend"] = be.name
        if be.name == "cupy":
            from gpudense.backends.cuda.nccl_engine import nccl_unavailable_reason, use_device

            report["gpus"] = use_device(mpi.local_rank)[1]
            if kind != "mpi":
                report["nccl"] = nccl_unavailable_reason()
    except Exception as exc:
        report["error"] = _one_line(exc)
    reports = mpi.allgather_object(report)
    if _use_nccl(kind, reports):
        from gpudense.distributed.nccl import NCCLCommunicator

        return NCCLCommunicator(mpi)
    return mpi


def _use_nccl(kind: str, reports: list[dict[str, Any]]) -> bool:
    """Decide, alike on every rank, whether to start NCCL; CollectiveError where the ranks cannot go on.

    ``reports``: every rank's ``{"backend", "gpus" (on its node), "ranks_here" (ranks on its node),
    "nccl" (why NCCL cannot load, or None), "error" (why the rank cannot start, or None)}``.
    """
    failed = [(r, rep["error"]) for r, rep in enumerate(reports) if rep["error"]]
    if failed:
        r, error = failed[0]
        more = f" (and {len(failed) - 1} more rank{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
        raise CollectiveError(f"rank {r}{more} cannot start: {error}")
    backends = [rep["backend"] for rep in reports]
    if len(set(backends)) > 1:
        seen = ", ".join(f"rank {r}: {b}" for r, b in enumerate(backends))
        raise CollectiveError(f"the ranks chose different backends ({seen}); name the backend explicitly")
    if backends[0] != "cupy":
        if kind == "nccl":
            raise CollectiveError(f"NCCL needs the CuPy backend; the ranks use {backends[0]}")
        return False
    if kind == "mpi":
        return False
    problem = next((f"rank {r}: {rep['nccl']}" for r, rep in enumerate(reports) if rep["nccl"]), None)
    crowded = next((rep for rep in reports if rep["ranks_here"] > rep["gpus"]), None)
    if problem is None and crowded is not None:
        problem = (f"{crowded['ranks_here']} ranks share a node with {crowded['gpus']} GPU(s); "
                   "NCCL needs one GPU per rank")
    if problem is None:
        return True
    if kind == "nccl":
        raise CollectiveError(f"cannot start NCCL: {problem}")
    warnings.warn(DistributedFallbackWarning(f"gpudense: NCCL cannot be used ({problem}); using MPI"), stacklevel=3)
    return False


def _mpi_world() -> Any:
    """``MPI.COMM_WORLD`` where mpi4py has started MPI (and not finished it); else None. Starts nothing."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None:
        return None
    try:
        if not MPI.Is_initialized() or MPI.Is_finalized():
            return None
    except Exception:
        return None
    return MPI.COMM_WORLD


def _is_collective(exc: BaseException | None, kinds: tuple[type, ...]) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False


@contextlib.contextmanager
def abort_on_error(prog: str = "gpudense", *, collective: tuple[type, ...] = ()) -> Iterator[None]:
    """End every rank of the MPI job when the block fails on this rank alone.

    An exception escaping the block in an MPI world of more than one process
    prints ``<prog>: error on rank R of N: <message>; stopping all ranks``
    on stderr (a signal: ``<prog>: stopped by SIGTERM on rank R of N; <the
    note the command attached, e.g. where the last complete checkpoint is>;
    stopping all ranks``, and the job's status is 128 + the signal's number) (with the traceback for errors other than the usual
    ValueError, TypeError, OSError, RuntimeError, MemoryError, ImportError
    and KeyboardInterrupt, or when ``GPUDENSE_DEBUG`` is set), waits (at
    most 2 s) until the launcher has read that line from the output pipe,
    and calls ``MPI_Abort`` (then exits at once, status 1, should that
    return): the launcher ends every rank and exits non-zero.

    Errors every rank raises at once pass through untouched, so each rank
    ends normally with its own message: a :class:`CollectiveError`, an
    instance of ``collective``, or an error caused (``raise ... from``) by
    one. So does everything where MPI is not running or the world is one
    process.

    Args:
        prog: The name that starts the printed line.
        collective: More exception types known to be raised on every rank at once.

    Example:
        >>> with abort_on_error("demo"):  # no MPI world here: a plain block
        ...     x = 1
    """
    debug = _env.debug()  # read before the block runs: a bad value is an error of its own, not of the block
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        if _is_collective(exc, (CollectiveError, *collective)):
            raise
        world = _mpi_world()
        if world is None or world.Get_size() <= 1:
            raise
        if debug or not isinstance(exc, _PLAIN):
            traceback.print_exc()
        where, status = f"rank {world.Get_rank()} of {world.Get_size()}", 1
        if isinstance(exc, KeyboardInterrupt):  # a signal, as one process reports it (gpudense.cli.main)
            signum = getattr(exc, "signum", signal.SIGINT)
            note = getattr(exc, "note", "")
            line = f"{prog}: stopped by {signal.Signals(signum).name} on {where}" + (f"; {note}" if note else "")
            status = 128 + signum
        else:
            line = f"{prog}: error on {where}: {_one_line(exc)}"
        sys.stderr.write(f"{line}; stopping all ranks\n")  # one write: the lines of ranks do not mix
        _drain_output()
        world.Abort(status)
        os._exit(status)  # MPICH's MPI_Abort can return before the launcher's kill arrives; an exit is also seen


def _drain_output(limit_s: float = 2.0) -> None:
    """Flush stdout and stderr and wait, up to ``limit_s``, until a pipe behind them has been read.

    A launcher forwards each rank's output from a pipe and may handle
    ``MPI_Abort`` before it has read the last lines written there; the
    error line would then be lost. Where stdout or stderr is a pipe, the
    bytes not yet read are polled (``FIONREAD``) until none are left; on a
    terminal, a file or a system without ``FIONREAD`` this returns at once.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        import fcntl  # POSIX only
        import termios

        pipes = [fd for fd in (1, 2) if stat.S_ISFIFO(os.fstat(fd).st_mode)]
    except (ImportError, OSError):
        return
    deadline = time.monotonic() + limit_s
    for fd in pipes:
        while time.monotonic() < deadline:
            try:
                unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                break
            if unread <= 0:
                break
            time.sleep(0.002)


def run_on_root(comm: Communicator, fn: Callable[[], Any], root: int = 0) -> Any:
    """Call ``fn()`` on rank ``root`` only and return its result on every rank.

    An exception in ``fn`` becomes a :class:`CollectiveError` with the same
    message on every rank (on ``root``, raised from the original), so the
    ranks end together instead of waiting for ``root``.

    Args:
        comm: The communicator.
        fn: A function of no arguments returning something picklable (e.g.
            ``lambda: load_checkpoint(path)``).
        root: The rank that calls it.

    Example:
        >>> from gpudense.distributed import LocalCommunicator
        >>> run_on_root(LocalCommunicator(), lambda: 42)
        42
    """
    result = error = original = None
    if comm.rank == root:
        try:
            result = fn()
        except Exception as exc:
            error, original = _one_line(exc), exc
    result, error = comm.broadcast_object((result, error), root)
    if error is not None:
        raise CollectiveError(error) from original
    return result
