"""What the MPI tests run under ``mpiexec``: ``python mpi_worker.py SCENARIO OUT_DIR``.

Scenarios:

* ``equivalence [KIND [BACKEND]]``: float64 training (Adam, then SGD with
  momentum) on a synthetic set whose last batch is smaller than the world,
  through ``fit(..., comm=init(KIND, backend=BACKEND))`` (default ``mpi``,
  ``numpy``); rank 0 writes ``OUT_DIR/<optimizer>.npz`` (history and
  parameters) and every rank checks that all ranks ended with the same
  parameter bits.
* ``raise``: rank 1 raises in its fourth step; the others go on training.
* ``kill``: rank 1 kills itself (SIGKILL) in its fourth step.

Imported by pytest's doctest collection too: nothing happens unless run.
"""

from __future__ import annotations

import os
import signal
import sys
import zlib
from pathlib import Path

import numpy as np

# The set-up the tests compare against a single process: the one place it is written.
# 223 training samples (and 56 test) = 6 batches of 37 + a last batch of 1 row. 37 = 19 + 18
# on 2 ranks, 13 + 12 + 12 on 3; the last batch leaves every rank but rank 0 without rows.
SAMPLES, FEATURES, CLASSES = 279, 6, 3
BATCH, EPOCHS, SEED = 37, 3, 7
OPTIMIZERS = {"adam": {"lr": 0.01}, "sgd": {"lr": 0.1, "momentum": 0.9}}


def problem(optimizer: str, backend: str = "numpy"):
    """``(model, optimizer, data, config)`` of the equivalence run, alike on every rank and in the test."""
    from gpudense.data import make_synthetic
    from gpudense.nn import MLP
    from gpudense.optim import make_optimizer
    from gpudense.training import TrainConfig

    data = make_synthetic(SAMPLES, FEATURES, CLASSES, seed=SEED, dtype="float64")
    model = MLP([FEATURES, 16, CLASSES], dtype="float64", backend=backend, rng=SEED)
    opt = make_optimizer(optimizer, model, **OPTIMIZERS[optimizer])
    return model, opt, data, TrainConfig(epochs=EPOCHS, batch_size=BATCH, rng=SEED)


def _equivalence(out: Path, kind: str, backend: str) -> None:
    from gpudense import distributed
    from gpudense.training import fit

    comm = distributed.init(kind, backend=backend)
    for name in OPTIMIZERS:
        model, opt, data, config = problem(name, backend)
        history = fit(model, opt, data, config, comm=comm)
        params = model.state_dict()
        crc = zlib.crc32(b"".join(params[k].tobytes() for k in sorted(params)))
        crcs = comm.allgather_object(crc)
        if len(set(crcs)) != 1:
            raise AssertionError(f"ranks ended with different parameters: crc32 {crcs}")
        if comm.rank == 0:
            np.savez(out / f"{name}.npz", loss=history.loss, train_acc=history.train_acc,
                     test_acc=history.test_acc, size=comm.size, kind=comm.kind,
                     cuda_aware=getattr(comm, "cuda_aware", False),
                     **{f"param/{k}": v for k, v in params.items()})


def _failing(out: Path, how: str) -> None:
    from gpudense import distributed
    from gpudense.training import fit

    def on_batch(epoch, step, seen, loss_sum, correct):
        if comm.rank == 1 and epoch == 1 and step == 3:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure")

    with distributed.abort_on_error("mpi_worker"):
        comm = distributed.init("mpi", backend="numpy")
        model, opt, data, config = problem("sgd")
        config = type(config)(epochs=10_000, batch_size=BATCH, rng=SEED)
        fit(model, opt, data, config, comm=comm, on_batch=on_batch)
    print(f"rank {comm.rank}: finished", flush=True)  # must not happen


if __name__ == "__main__":
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    if scenario == "equivalence":
        _equivalence(out_dir, *(sys.argv[3:5] + ["mpi", "numpy"][len(sys.argv[3:5]):]))
    elif scenario in ("raise", "kill"):
        _failing(out_dir, scenario)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
