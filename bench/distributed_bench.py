"""Data-parallel benchmark: all-reduce bandwidth by message size, and one training epoch at 1..N ranks.

The script launches itself under the environment's ``mpiexec`` (the one next
to this Python, from ``gpudense[distributed]``; ``--mpiexec`` for another)
once per measurement, and writes one JSON file:

* ``allreduce``: for each rank count >= 2 and message size, the median time
  of ``comm.allreduce`` on a float32 array (the gpudense communicator:
  MPI on the CPU, NCCL on GPUs, as ``gpudense train`` uses it), with the
  algorithm bandwidth ``bytes / time`` and the bus bandwidth
  ``algbw * 2 (N - 1) / N`` (the data each rank sends and receives in a
  ring all-reduce; nccl-tests' convention, comparable to the link speed).
* ``epoch``: for each rank count, one training epoch of the same model with
  the same global batch (``fit(..., comm=...)``, the epoch after a warm-up
  one), its time, samples per second and speed-up over one rank. On the CPU
  each rank has ``--threads`` BLAS threads (default 1), so N ranks use N
  cores: the speed-up says how well data parallelism scales on this
  machine (at most the number of free cores), not a GPU's.

    python bench/distributed_bench.py --smoke --out /tmp/distributed.json   # seconds: checks the script
    python bench/distributed_bench.py --out bench/results/distributed-cpu-<date>.json
    python bench/distributed_bench.py --backend cupy --ranks 1,2,4,8 \
        --out bench/results/distributed-gpu-<date>.json                    # NCCL, one GPU per rank

Run it on a quiet machine: other work on the cores changes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

SMOKE = {"sizes": [2**10, 2**14, 2**16], "rounds": 2, "reps": 3, "samples": 2000, "features": 32,
         "hidden": "64", "ranks": "1,2"}
FULL = {"sizes": [2**k for k in range(10, 27, 2)], "rounds": 5, "reps": 20, "samples": 60_000,
        "features": 784, "hidden": "1024,1024", "ranks": "1,2"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                   help="numpy: MPI ranks on the CPU (default); cupy: NCCL, one GPU per rank")
    p.add_argument("--ranks", help="rank counts, comma-separated (default 1,2)")
    p.add_argument("--sizes", help="all-reduce message sizes in bytes, comma-separated (default 1 KiB .. 64 MiB)")
    p.add_argument("--samples", type=int, help="training samples of the epoch (default 60,000)")
    p.add_argument("--features", type=int, help="features per sample (default 784)")
    p.add_argument("--hidden", help="hidden sizes (default 1024,1024)")
    p.add_argument("--batch-size", type=int, default=256, help="the global batch (default 256)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per rank on the CPU (default 1)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs, measures nothing")
    p.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"), help="the launcher")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per launch before it counts as hung")
    p.add_argument("--out", help="the JSON file to write (required)")
    p.add_argument("--worker", choices=["allreduce", "epoch"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.worker and not args.out:
        p.error("--out is required")
    preset = SMOKE if args.smoke else FULL
    args.ranks = [int(r) for r in (args.ranks or preset["ranks"]).split(",")]
    args.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else preset["sizes"]
    for name in ("samples", "features", "hidden"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    args.rounds, args.reps = preset["rounds"], preset["reps"]
    if min(args.ranks) < 1 or min(args.sizes) < 4 or args.batch_size < 1 or args.threads < 1:
        p.error("rank counts, the batch and threads must be >= 1, sizes >= 4 bytes")
    return args


# -- under mpiexec ------------------------------------------------------------------------------


def _allreduce_worker(args: argparse.Namespace, comm, backend) -> list[dict]:
    xp = backend.xp
    rows = []
    for size in args.sizes:
        a = xp.zeros(size // 4, dtype=xp.float32)  # zeros: sums stay finite however many calls
        comm.allreduce(a)  # warm-up (NCCL builds its rings here)
        times = []
        for _ in range(args.rounds):
            comm.barrier()
            t0 = time.perf_counter()
            for _ in range(args.reps):
                comm.allreduce(a)
            backend.synchronize()
            times.append((time.perf_counter() - t0) / args.reps)
        seconds = max(comm.allgather_object(statistics.median(times)))  # the slowest rank's median
        algbw = a.nbytes / seconds
        rows.append({"ranks": comm.size, "bytes": int(a.nbytes), "seconds": seconds, "algbw_GBps": algbw / 1e9,
                     "busbw_GBps": algbw * 2 * (comm.size - 1) / comm.size / 1e9})
    return rows


def _epoch_worker(args: argparse.Namespace, comm, backend) -> list[dict]:
    from gpudense.data import make_synthetic
    from gpudense.nn import MLP
    from gpudense.optim import Adam
    from gpudense.training import TrainConfig, fit, to_device

    data = to_device(make_synthetic(int(args.samples * 1.25), args.features, 10, seed=0), backend)
    hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
    model = MLP([args.features, *hidden, 10], backend=backend, rng=0)
    config = TrainConfig(epochs=2, batch_size=args.batch_size, rng=0)  # epoch 1 warms up
    history = fit(model, Adam(model, lr=1e-3), data, config, comm=comm)
    seconds = history.seconds[-1]
    return [{"ranks": comm.size, "seconds": seconds, "samples": int(data.x_train.shape[0]),
             "samples_per_second": data.x_train.shape[0] / seconds, "global_batch": args.batch_size,
             "loss": history.loss[-1]}]


def worker(args: argparse.Namespace) -> int:
    from gpudense import distributed
    from gpudense.backends import get_backend
    from gpudense.cli._common import blas_threads

    with distributed.abort_on_error("distributed_bench"):
        comm = distributed.init("auto", backend=args.backend)
        backend = get_backend(args.backend)
        with blas_threads(args.threads if args.backend == "numpy" else None, option="--threads", extra="bench"):
            rows = (_allreduce_worker if args.worker == "allreduce" else _epoch_worker)(args, comm, backend)
        if comm.rank == 0:
            Path(args.result).write_text(json.dumps({"rows": rows, "communicator": comm.describe(),
                                                     "kind": comm.kind}))
    return 0


# -- the driver -----------------------------------------------------------------------------------


def _launch(args: argparse.Namespace, ranks: int, what: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [args.mpiexec, "-n", str(ranks), sys.executable, str(Path(__file__).resolve()), "--worker", what,
               "--result", str(result), "--backend", args.backend,
               "--sizes", ",".join(map(str, args.sizes)), "--samples", str(args.samples),
               "--features", str(args.features), "--hidden", args.hidden, "--batch-size", str(args.batch_size),
               "--threads", str(args.threads)] + (["--smoke"] if args.smoke else [])
        print(f"  {what}, {ranks} rank(s) ...", flush=True)
        done = subprocess.run(cmd, timeout=args.timeout, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"distributed_bench: {what} on {ranks} ranks failed:\n{done.stderr[-3000:]}")
        return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if not Path(args.mpiexec).exists():
        raise SystemExit(f"distributed_bench: no mpiexec at {args.mpiexec}: pip install 'gpudense[distributed]'")
    import gpudense
    from gpudense.benchmark.machine import environment, utc_now
    from gpudense.backends import get_backend

    backend = get_backend(args.backend)
    report = {
        "benchmark": "gpudense data-parallel: all-reduce bandwidth and one training epoch per rank count",
        "date_utc": utc_now(),
        "gpudense": gpudense.__version__,
        "smoke": args.smoke,
        "backend": backend.name,
        "environment": environment(backend, args.threads if args.backend == "numpy" else None),
        "cpu_count": os.cpu_count(),
        "config": {k: getattr(args, k) for k in ("ranks", "sizes", "samples", "features", "hidden", "batch_size",
                                                 "threads", "rounds", "reps")},
        "allreduce": [],
        "epoch": [],
    }
    print(f"distributed_bench: {backend.name}, ranks {args.ranks}{' (smoke)' if args.smoke else ''}")
    for ranks in args.ranks:
        if ranks >= 2:
            got = _launch(args, ranks, "allreduce")
            report["allreduce"] += got["rows"]
            report["communicator"] = got["communicator"]
        report["epoch"] += _launch(args, ranks, "epoch")["rows"]
    base = next((row["seconds"] for row in report["epoch"] if row["ranks"] == 1), None)
    for row in report["epoch"]:
        row["speedup"] = None if base is None else base / row["seconds"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["allreduce"]:
        print(f"allreduce {row['ranks']} ranks {row['bytes']:>10,d} B  {row['seconds'] * 1e6:10.1f} us  "
              f"busbw {row['busbw_GBps']:.3f} GB/s")
    for row in report["epoch"]:
        speedup = "" if row["speedup"] is None else f"  speed-up {row['speedup']:.2f}"
        print(f"epoch {row['ranks']} ranks  {row['seconds']:.3f} s  {row['samples_per_second']:,.0f} samples/s{speedup}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
