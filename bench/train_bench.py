"""Time one training epoch of ``gpudense train``'s loop on a large synthetic set (GPU benchmark).

Default: 1,000,000 x 784 synthetic samples (10 classes), MLP 784-1024-1024-10
(ReLU), float32, Adam (lr 1e-3), batch 1024, on the CuPy backend. The set is
generated on the host in chunks and copied to the device once; a few warm-up
steps run first (cuBLAS handles, kernel compilation), then one full shuffled
epoch through :func:`gpudense.training.train_epoch` -- the very loop of
``gpudense train`` -- is timed with CUDA events (``perf_counter`` on the CPU
backend). Reported: epoch time and samples per second.

Writes JSON to ``$OUT/train_bench.json`` when ``$OUT`` is set, else to
``bench/results/train_epoch_<backend>.json`` (or ``--out``).

    python bench/train_bench.py                       # the GPU measurement
    python bench/train_bench.py --backend numpy --samples 20000 --out /tmp/t.json   # a quick CPU try
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import gpudense  # noqa: E402
from gpudense.data import make_synthetic  # noqa: E402
from gpudense.losses import check_labels  # noqa: E402
from gpudense.nn import MLP  # noqa: E402
from gpudense.optim import make_optimizer  # noqa: E402
from gpudense.training import train_epoch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    p.add_argument("--samples", type=int, default=1_000_000, help="training samples (default 1,000,000)")
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hidden", default="1024,1024", help="hidden sizes (default 1024,1024)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON path (default: $OUT/train_bench.json or bench/results/)")
    args = p.parse_args(argv)
    for name in ("samples", "features", "classes", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def git_commit() -> str | None:
    """HEAD's hash, with "+dirty" when the working tree has uncommitted changes."""
    try:
        def git(*cmd: str) -> str:
            return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True,
                                  check=True).stdout.strip()

        head = git("rev-parse", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
    backend = gpudense.get_backend(args.backend)
    xp = backend.xp

    t = time.perf_counter()
    n_test = 10_000
    ds = make_synthetic(args.samples + n_test, args.features, args.classes, seed=args.seed, dtype=args.dtype,
                        test_fraction=n_test / (args.samples + n_test))
    check_labels(ds.y_train, ds.y_train.shape[0], ds.n_classes)
    gen_s = time.perf_counter() - t
    assert ds.x_train.shape[0] == args.samples
    print(f"data: {ds!r} generated in {gen_s:.1f} s", flush=True)

    t = time.perf_counter()
    x = backend.asarray(ds.x_train)
    y = backend.asarray(ds.y_train)
    backend.synchronize()
    copy_s = time.perf_counter() - t

    sizes = [args.features, *hidden, args.classes]
    model = MLP(sizes, dtype=args.dtype, backend=backend, rng=args.seed)
    optimizer = make_optimizer(args.optimizer, model, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    print(f"model: {model!r}; optimizer: {optimizer!r}; batch {args.batch_size}", flush=True)

    # warm-up: the same steps as the epoch, on the first batches
    warm = backend.asarray(np.arange(min(args.samples, args.warmup_steps * args.batch_size)))
    train_epoch(model, optimizer, x, y, warm, batch_size=args.batch_size)
    backend.synchronize()

    order = backend.asarray(rng.permutation(args.samples))
    backend.synchronize()
    if args.backend == "cupy":
        start, stop = xp.cuda.Event(), xp.cuda.Event()
        wall = time.perf_counter()
        start.record()
        loss_sum, correct = train_epoch(model, optimizer, x, y, order, batch_size=args.batch_size)
        stop.record()
        stop.synchronize()
        wall = time.perf_counter() - wall
        epoch_s = xp.cuda.get_elapsed_time(start, stop) / 1e3
        timer = "CUDA events"
    else:
        wall = time.perf_counter()
        loss_sum, correct = train_epoch(model, optimizer, x, y, order, batch_size=args.batch_size)
        wall = epoch_s = time.perf_counter() - wall
        timer = "time.perf_counter"
    loss = float(loss_sum) / args.samples
    acc = int(correct) / args.samples
    steps = -(-args.samples // args.batch_size)

    result = {
        "benchmark": "one training epoch (gpudense.training.train_epoch)",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpudense": gpudense.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "backend": backend.name,
        "device": backend.describe(),
        "timer": timer,
        "samples": args.samples,
        "features": args.features,
        "classes": args.classes,
        "sizes": sizes,
        "dtype": args.dtype,
        "optimizer": repr(optimizer),
        "batch_size": args.batch_size,
        "steps": steps,
        "warmup_steps": args.warmup_steps,
        "epoch_seconds": epoch_s,
        "wall_seconds": wall,
        "samples_per_second": args.samples / epoch_s,
        "ms_per_step": 1e3 * epoch_s / steps,
        "data_generation_seconds": gen_s,
        "host_to_device_seconds": copy_s,
        "epoch_loss": loss,
        "epoch_train_accuracy": acc,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.out:
        out = Path(args.out)
    elif os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "train_bench.json"
    else:
        out = REPO / "bench" / "results" / f"train_epoch_{backend.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"epoch: {epoch_s:.3f} s ({timer}), {result['samples_per_second']:,.0f} samples/s, "
          f"{result['ms_per_step']:.3f} ms/step; loss {loss:.4f}, train acc {acc:.4f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
