"""The MPI communicator's handling of arrays, on a stand-in for mpi4py (no MPI started).

The real engine runs in test_mpiexec.py and test_launch.py; here the
stand-in records what would reach MPI.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gpudense.distributed import MPICommunicator


class FakeWorld:
    """Two identical ranks as mpi4py's Comm would show them: Allreduce doubles, Bcast keeps."""

    def __init__(self):
        self.calls = []

    def Allreduce(self, sendbuf, recvbuf, op):
        assert sendbuf == "IN_PLACE" and op == "SUM"
        self.calls.append(("Allreduce", recvbuf.dtype))
        recvbuf *= 2

    def Bcast(self, buf, root):
        self.calls.append(("Bcast", buf.dtype, root))


def _engine(float16: bool) -> MPICommunicator:
    comm = MPICommunicator.__new__(MPICommunicator)  # the attributes __init__ would set, without MPI
    comm.MPI = SimpleNamespace(IN_PLACE="IN_PLACE", SUM="SUM")
    comm.comm, comm.rank, comm.size = FakeWorld(), 0, 2
    comm.cuda_aware, comm.cuda_aware_reason = False, "test"
    comm._float16, comm._staging_said = float16, False
    return comm


def test_numpy_arrays_go_to_mpi_as_they_are():
    comm = _engine(float16=True)
    for dtype in (np.float16, np.float32, np.float64, np.int64):
        a = np.arange(4, dtype=dtype)
        comm.allreduce(a)
        assert a.tolist() == [0, 2, 4, 6]
    assert [c[1] for c in comm.comm.calls] == [np.float16, np.float32, np.float64, np.int64]
    comm.broadcast(np.ones(3), root=1)
    assert comm.comm.calls[-1] == ("Bcast", np.float64, 1)


def test_float16_is_reduced_in_float32_where_mpi_has_no_half_type():
    comm = _engine(float16=False)
    a = np.array([0.5, 1.5, 2048.0], np.float16)
    comm.allreduce(a, op="mean")
    assert comm.comm.calls == [("Allreduce", np.float32)]
    assert a.dtype == np.float16 and a.tolist() == [0.5, 1.5, 2048.0]


def test_bfloat16_is_reduced_in_float32_mpi_having_no_such_type():
    bf16 = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes").bfloat16
    comm = _engine(float16=True)
    a = np.array([0.5, 1.5, 2048.0], bf16)
    comm.allreduce(a, op="mean")
    assert comm.comm.calls == [("Allreduce", np.float32)]
    assert a.dtype == bf16 and a.tolist() == [0.5, 1.5, 2048.0]


def test_the_engine_takes_numpy_and_cupy_arrays_only():
    with pytest.raises(TypeError, match="expected a numpy.ndarray or cupy.ndarray, got builtins.memoryview"):
        _engine(float16=True).allreduce(memoryview(b"abcd"))
