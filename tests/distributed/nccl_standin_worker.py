"""Under ``mpiexec -n 2``: the NCCL communicator on the CuPy stand-in (tests/cupy_standin), no GPU.

``python nccl_standin_worker.py OUT_DIR``: every rank installs the stand-in
(two devices per node, so that each rank has its own), starts
``distributed.init("nccl", backend="cupy")``, sums and broadcasts float32 and
bfloat16 arrays, tries the same bfloat16 sum through CuPy's
``cupyx.distributed.NCCLBackend`` (whose dtype table has no bfloat16), then
trains the equivalence problem of mpi_worker.py in float32 and bfloat16 over
NCCL. Rank 0 writes ``OUT_DIR/nccl.npz``. Imported by pytest's doctest
collection too: nothing happens unless run.
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cupy_standin

    cupy_standin.install()
    import cupy as cp

    from gpudense import distributed
    from gpudense._checks import float_dtype
    from gpudense.data import make_synthetic
    from gpudense.nn import MLP
    from gpudense.optim import make_optimizer
    from gpudense.training import TrainConfig, fit

    comm = distributed.init("nccl", backend="cupy")
    found: dict[str, object] = {"kind": comm.kind, "device": comm.device, "describe": comm.describe(),
                                "root_says": comm.broadcast_object(f"rank {comm.rank}", root=1)}
    comm.barrier()
    for dtype in ("float32", "bfloat16"):
        t = float_dtype(dtype)
        a = cp.asarray((np.arange(12) * (comm.rank + 1) / 8).astype(t))
        found[f"sum/{dtype}"] = comm.allreduce(a).get().astype(np.float64)
        b = cp.asarray(np.full(5, comm.rank + 3, t))
        found[f"bcast/{dtype}"] = comm.broadcast(b, root=1).get().astype(np.float64)
    from cupyx.distributed import NCCLBackend

    try:
        NCCLBackend(comm.size, comm.rank, use_mpi=True).all_reduce(*(2 * [cp.zeros(4, float_dtype("bfloat16"))]))
        found["cupyx_bfloat16"] = "summed"
    except TypeError as exc:
        found["cupyx_bfloat16"] = str(exc)
    for dtype in ("float32", "bfloat16"):
        data = make_synthetic(160, 6, 3, seed=7, dtype=dtype)
        model = MLP([6, 16, 3], activation="gelu", dtype=dtype, backend="cupy", rng=7)
        opt = make_optimizer("adam", model, lr=0.01)
        history = fit(model, opt, data, TrainConfig(epochs=2, batch_size=32, rng=7), comm=comm)
        params = model.state_dict()
        crc = zlib.crc32(b"".join(np.asarray(params[k]).tobytes() for k in sorted(params)))
        found[f"same_params/{dtype}"] = len(set(comm.allgather_object(crc))) == 1
        found[f"loss/{dtype}"] = np.asarray(history.loss)
    if comm.rank == 0:
        np.savez(out / "nccl.npz", **{k: np.asarray(v) for k, v in found.items()})
    calls = [c[0] for c in cupy_standin.CALLS if c[0].startswith("nccl.")]
    print(f"rank {comm.rank}: {calls.count('nccl.allReduce')} NCCL all-reduces", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("CUPY_STANDIN_DEVICES", "2")
    main(Path(sys.argv[1]))
