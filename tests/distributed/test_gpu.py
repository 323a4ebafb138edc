"""The GPU paths: NCCL through CuPy, and MPI with CuPy arrays (through host buffers or directly).

Every test carries the ``gpu`` marker (skipped, with the reason, where CuPy
or a usable CUDA device is missing); the NCCL tests also need NCCL
(``nvidia-nccl-cu12`` / ``-cu13``), and two ranks of NCCL need two GPUs.

Tolerance against the one-process NumPy reference: float64, where cuBLAS and
OpenBLAS add in different orders (~1e-16 per operation) and three epochs
amplify little: 1e-10 relative; accuracies within one sample.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import numpy as np
import pytest

from gpudense.training import fit
from mpi_launch import WORKER

pytestmark = pytest.mark.gpu

RTOL = 1e-10


def _nccl_or_skip(gpus: int = 1) -> None:
    from gpudense.backends.cuda.nccl_engine import nccl_unavailable_reason

    reason = nccl_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < gpus:
        pytest.skip(f"needs {gpus} GPUs for {gpus} NCCL ranks")


def _compare_with_one_process(out_dir, ranks: int, kind: str) -> None:
    spec = importlib.util.spec_from_file_location("mpi_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    for name in worker.OPTIMIZERS:
        model, optimizer, data, config = worker.problem(name, "numpy")
        history = fit(model, optimizer, data, config)
        got = np.load(out_dir / f"{name}.npz")
        assert int(got["size"]) == ranks and str(got["kind"]) == kind
        np.testing.assert_allclose(got["loss"], history.loss, rtol=RTOL, atol=0)
        n_test = data.x_test.shape[0]
        assert np.max(np.abs(got["test_acc"] - np.array(history.test_acc))) <= 1 / n_test + 1e-12
        for key, want in model.state_dict().items():
            assert np.max(np.abs(got[f"param/{key}"] - want)) <= RTOL * np.max(np.abs(want)), (name, key)


def test_mpi_with_cupy_arrays_trains_like_one_process(mpirun, tmp_path):
    """Two ranks (on one GPU if there is one): CuPy arrays through MPI."""
    done = mpirun(["-n", "2", sys.executable, str(WORKER), "equivalence", str(tmp_path), "mpi", "cupy"], timeout=120)
    assert done.returncode == 0, done.stderr
    _compare_with_one_process(tmp_path, 2, "mpi")
    if not bool(np.load(tmp_path / "adam.npz")["cuda_aware"]):
        assert done.stderr.count("HostStagingWarning") == 2  # said once by each rank


def test_nccl_in_a_world_of_one(mpirun, tmp_path):
    _nccl_or_skip(1)
    script = tmp_path / "nccl_one.py"
    script.write_text(textwrap.dedent("""
        import cupy as cp
        from gpudense import distributed
        comm = distributed.init("nccl", backend="cupy")
        assert type(comm).__name__ == "NCCLCommunicator", comm
        for dtype in (cp.float16, cp.float32, cp.float64):
            a = cp.arange(5, dtype=dtype)
            comm._allreduce_sum(a)          # the engine itself: one rank sums to the same values
            comm._broadcast(a, 0)
            assert (a == cp.arange(5, dtype=dtype)).all()
            comm.allreduce(a, op="mean")
        comm.barrier()
        print(comm.describe())
    """))
    done = mpirun(["-n", "1", sys.executable, str(script)], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("NCCL ") and "1 rank, one GPU each" in done.stdout


def test_nccl_on_two_gpus_trains_like_one_process(mpirun, tmp_path):
    _nccl_or_skip(2)
    done = mpirun(["-n", "2", sys.executable, str(WORKER), "equivalence", str(tmp_path), "nccl", "cupy"], timeout=120)
    assert done.returncode == 0, done.stderr
    _compare_with_one_process(tmp_path, 2, "nccl")


def test_gpudense_train_on_two_gpus_with_nccl(mpirun):
    _nccl_or_skip(2)
    done = mpirun(["-n", "2", sys.executable, "-m", "gpudense", "train", "--backend", "cupy", "--quiet",
                   "--epochs", "3"], timeout=180)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("epoch") for line in lines) == 3
    assert any(line.startswith("distributed: NCCL") for line in lines)
    assert float(lines[-1].split()[-1]) >= 0.95
