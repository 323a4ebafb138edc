"""The NCCL communicator on 2 MPI ranks, run on the CuPy stand-in (tests/cupy_standin): no GPU needed.

The stand-in's NCCL sums over MPI and refuses a datatype that is not the
element type of the memory it is given, so these runs check what the
engine hands NCCL: bfloat16 as NCCL's own ``ncclBfloat16``, where CuPy's
``cupyx.distributed.NCCLBackend`` refuses bfloat16 outright.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the MPI runs need mpi4py: pip install 'gpudense[distributed]'")
pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes: pip install 'gpudense[bf16]'")

WORKER = Path(__file__).resolve().parent / "nccl_standin_worker.py"


def test_nccl_on_two_ranks_sums_and_broadcasts_float32_and_bfloat16_and_trains(mpirun, tmp_path):
    done = mpirun(["-n", "2", sys.executable, str(WORKER), str(tmp_path)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "nccl.npz")
    assert str(got["kind"]) == "nccl"
    assert str(got["describe"]).startswith("NCCL 2.27.7 (started through MPI: ")
    assert str(got["describe"]).endswith("2 ranks, one GPU each")
    assert str(got["root_says"]) == "rank 1"
    for dtype in ("float32", "bfloat16"):
        # rank r holds arange(12) * (r + 1) / 8: the sum is arange(12) * 3 / 8, exact in both types
        np.testing.assert_array_equal(got[f"sum/{dtype}"], np.arange(12) * 3 / 8)
        np.testing.assert_array_equal(got[f"bcast/{dtype}"], np.full(5, 4.0))  # rank 1 holds 1 + 3
        assert bool(got[f"same_params/{dtype}"])
        loss = got[f"loss/{dtype}"]
        assert loss.shape == (2,) and np.isfinite(loss).all() and loss[1] < loss[0]
    assert str(got["cupyx_bfloat16"]) == "Unknown dtype bfloat16 for NCCL"
    assert done.stdout.count("NCCL all-reduces") == 2
