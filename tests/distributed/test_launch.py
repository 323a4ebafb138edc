"""Starting and ending a distributed run: init's choices, the missing extra, abort_on_error, run_on_root.

MPI is never started inside the pytest process: the cases that need it run
in a child Python (a world of one, no launcher).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gpudense.distributed import (
    CollectiveError,
    DistributedUnavailableError,
    LocalCommunicator,
    MPICommunicator,
    abort_on_error,
    init,
    launched_world_size,
    run_on_root,
)
from gpudense.distributed.launch import _is_collective, _one_line, _use_nccl
from gpudense.training import DivergenceError


def test_init_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match=r"kind must be one of \('auto', 'mpi', 'nccl'\); got 'gloo'"):
        init("gloo")


def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` raises ImportError
    for start in (init, MPICommunicator):
        with pytest.raises(DistributedUnavailableError, match=r"pip install 'gpudense\[distributed\]'") as info:
            start()
        assert "\n" not in str(info.value)


def test_launcher_size_is_read_from_the_environment():
    assert launched_world_size({}) is None
    assert launched_world_size({"PMI_SIZE": "2"}) == 2
    assert launched_world_size({"OMPI_COMM_WORLD_SIZE": "8", "PMI_SIZE": "1"}) == 8
    assert launched_world_size({"SLURM_STEP_NUM_TASKS": "4"}) == 4
    assert launched_world_size({"PMI_SIZE": "many"}) is None


def _report(backend="cupy", gpus=2, nccl=None, error=None, ranks_here=2):
    return {"backend": backend, "gpus": gpus, "ranks_here": ranks_here, "nccl": nccl, "error": error}


def test_nccl_is_chosen_for_cupy_and_not_for_numpy():
    assert _use_nccl("auto", [_report(), _report()]) is True
    assert _use_nccl("nccl", [_report(), _report()]) is True
    assert _use_nccl("mpi", [_report(), _report()]) is False
    assert _use_nccl("auto", [_report("numpy", None)] * 2) is False


def test_a_rank_that_cannot_start_is_an_error_everywhere():
    reports = [_report(), _report(error="no CUDA device"), _report(error="no CUDA device")]
    with pytest.raises(CollectiveError, match=r"rank 1 \(and 1 more rank\) cannot start: no CUDA device"):
        _use_nccl("auto", reports)


def test_ranks_on_different_backends_are_an_error():
    with pytest.raises(CollectiveError, match="rank 0: cupy, rank 1: numpy"):
        _use_nccl("auto", [_report(), _report("numpy", None)])


def test_nccl_asked_for_on_numpy_is_an_error():
    with pytest.raises(CollectiveError, match="NCCL needs the CuPy backend; the ranks use numpy"):
        _use_nccl("nccl", [_report("numpy", None)])


def test_without_nccl_auto_falls_back_to_mpi_saying_so_and_nccl_fails():
    reports = [_report(), _report(nccl="CuPy cannot load NCCL")]
    with pytest.warns(RuntimeWarning, match="NCCL cannot be used \\(rank 1: CuPy cannot load NCCL\\); using MPI"):
        assert _use_nccl("auto", reports) is False
    with pytest.raises(CollectiveError, match="cannot start NCCL: rank 1: CuPy cannot load NCCL"):
        _use_nccl("nccl", reports)


def test_more_ranks_than_gpus_on_a_node_cannot_use_nccl():
    reports = [_report(), _report(), _report(ranks_here=3), _report(ranks_here=3), _report(ranks_here=3)]
    with pytest.raises(CollectiveError, match="3 ranks share a node with 2 GPU"):
        _use_nccl("nccl", reports)
    with pytest.warns(RuntimeWarning, match="3 ranks share a node with 2 GPU"):
        assert _use_nccl("auto", reports) is False


def test_abort_on_error_without_mpi_lets_the_error_through():
    with pytest.raises(ZeroDivisionError):
        with abort_on_error("demo"):
            1 / 0
    with pytest.raises(SystemExit):
        with abort_on_error("demo"):
            raise SystemExit(0)


def test_collective_errors_are_recognised_through_their_causes():
    try:
        try:
            raise DivergenceError(2, float("nan"), 0.1)
        except DivergenceError as exc:
            raise RuntimeError("diverged") from exc
    except RuntimeError as exc:
        wrapped = exc
    assert _is_collective(wrapped, (CollectiveError, DivergenceError))
    assert not _is_collective(wrapped, (CollectiveError,))
    assert _is_collective(CollectiveError("x"), (CollectiveError,))


def test_error_lines():
    assert _one_line(ValueError("bad value\nmore")) == "bad value"
    assert _one_line(KeyError("k")) == "KeyError: 'k'"
    assert _one_line(KeyboardInterrupt()) == "interrupted"
    assert _one_line(RuntimeError()) == "RuntimeError"


def test_run_on_root_returns_the_result_or_raises_everywhere():
    comm = LocalCommunicator()
    assert run_on_root(comm, lambda: {"a": 1}) == {"a": 1}
    original = FileNotFoundError("checkpoint x.npz does not exist")

    def fail():
        raise original

    with pytest.raises(CollectiveError, match="^checkpoint x.npz does not exist$") as info:
        run_on_root(comm, fail)
    assert info.value.__cause__ is original


def _child(code: str) -> subprocess.CompletedProcess:
    pytest.importorskip("mpi4py", reason="needs mpi4py: pip install 'gpudense[distributed]'")
    env_code = "import os\nfor k in ('PMI_SIZE', 'PMI_RANK', 'PMI_FD'): os.environ.pop(k, None)\n"
    return subprocess.run([sys.executable, "-c", env_code + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_mpi_in_a_world_of_one():
    done = _child("""
        import numpy as np
        from gpudense import distributed
        comm = distributed.init("mpi", backend="numpy")
        a = np.array([1.0, 2.0], np.float16)
        comm.allreduce(a, op="mean")
        comm.broadcast(a)
        comm.barrier()
        with distributed.abort_on_error("child"):
            pass
        print(type(comm).__name__, comm.rank, comm.size, comm.local_rank, comm.local_size, a.tolist())
        print(comm.describe())
    """)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "MPICommunicator 0 1 0 1 [1.0, 2.0]"
    assert second.startswith("MPI (") and second.endswith("1 rank")


def test_an_error_in_a_world_of_one_is_not_an_abort():
    done = _child("""
        from gpudense import distributed
        comm = distributed.init("mpi", backend="numpy")
        with distributed.abort_on_error("child"):
            raise ValueError("plain error")
    """)
    assert done.returncode == 1
    assert "ValueError: plain error" in done.stderr and "stopping all ranks" not in done.stderr


@pytest.mark.no_gpu
def test_nccl_without_a_gpu_is_an_error_naming_the_cause():
    pytest.importorskip("cupy", reason="needs CuPy installed (and no usable GPU)")
    done = _child("""
        from gpudense import distributed
        try:
            distributed.init("nccl", backend="cupy")
        except distributed.CollectiveError as exc:
            print("error:", exc)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("error: rank 0 cannot start:") and "CUDA" in done.stdout


def test_nccl_on_numpy_is_an_error():
    done = _child("""
        from gpudense import distributed
        try:
            distributed.init("nccl", backend="numpy")
        except distributed.CollectiveError as exc:
            print("error:", exc)
    """)
    assert done.stdout.strip() == "error: NCCL needs the CuPy backend; the ranks use numpy", done.stderr


def test_nccl_unavailable_reason_names_the_install_command():
    pytest.importorskip("cupy", reason="needs CuPy installed")
    from gpudense.backends.cuda.nccl_engine import nccl_unavailable_reason

    reason = nccl_unavailable_reason()
    from cupy.cuda import nccl

    if nccl.available:
        assert reason is None
    else:
        assert reason.startswith("CuPy cannot load NCCL (") and "install it with pip install" in reason


def _unread(fd: int) -> int:
    import fcntl
    import struct
    import termios

    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def _stderr_to_pipe():
    """fd 2 replaced by the write end of a new pipe; returns (read end, the saved fd 2)."""
    import os

    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    os.close(w)
    return r, saved


def test_the_error_line_is_read_from_the_pipe_before_the_abort():
    """Before MPI_Abort, abort_on_error waits until the launcher has read what the rank wrote to a
    pipe (else MPICH's launcher may end the job before forwarding the error line)."""
    import os
    import threading
    import time

    from gpudense.distributed.launch import _drain_output

    r, saved = _stderr_to_pipe()
    got = []
    try:
        os.write(2, b"rank 1: the error line\n")

        def launcher():  # reads late, as a busy launcher does
            time.sleep(0.3)
            got.append(os.read(r, 1024))

        reader = threading.Thread(target=launcher)
        reader.start()
        _drain_output(limit_s=30)
        returned_after_read = bool(got)
        reader.join()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(r)
    assert returned_after_read and got == [b"rank 1: the error line\n"]


def test_output_nobody_reads_delays_the_abort_only_up_to_the_limit():
    import os

    from gpudense.distributed.launch import _drain_output

    r, saved = _stderr_to_pipe()
    try:
        os.write(2, b"unread\n")
        _drain_output(limit_s=0.05)  # returns: nobody reads this pipe
        left = _unread(r)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(r)
    assert left == len(b"unread\n")
