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
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
    p.add_argument("--torch", action="store_true",
                   help="also time the same loop in PyTorch on the same GPU (same initial weights, batch order, "
                        "Adam); epochs alternate gpudense, torch, torch, gpudense")
    p.add_argument("--out", help="JSON path (default: $OUT/train_bench.json or bench/results/)")
    args = p.parse_args(argv)
    if args.torch and (args.backend != "cupy" or args.optimizer != "adam"):
        p.error("--torch compares Adam on a GPU: it needs --backend cupy and --optimizer adam")
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


class TorchLoop:
    """The loop a PyTorch user writes, on the same GPU, data and initial weights as gpudense's model.

    ``torch.nn.Sequential`` of ``Linear`` layers (``weight = w.T``, from
    :meth:`gpudense.layer.Dense.torch_state`) with ReLU between them,
    ``F.cross_entropy``, ``torch.optim.Adam`` with the same learning rate;
    ``x`` and ``y`` are the CuPy arrays, shared through DLPack (no copy).
    Warms up with the same number of steps as gpudense.
    """

    def __init__(self, model: Any, x: Any, y: Any, args: argparse.Namespace) -> None:
        import torch

        self.torch, self.args = torch, args
        layers: list[Any] = []
        for i, dense in enumerate(b for b in model.blocks if hasattr(b, "torch_state")):
            if i:
                layers.append(torch.nn.ReLU())
            lin = torch.nn.Linear(dense.in_features, dense.out_features, dtype=getattr(torch, args.dtype))
            lin.load_state_dict({k: torch.from_numpy(v) for k, v in dense.torch_state().items()})
            layers.append(lin)
        self.model = torch.nn.Sequential(*layers).cuda()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.x, self.y = torch.from_dlpack(x), torch.from_dlpack(y).long()
        self.epoch(torch.arange(min(args.samples, args.warmup_steps * args.batch_size), device="cuda"))

    def epoch(self, order: Any) -> float:
        """Seconds (CUDA events) of one pass over ``order`` (row indices, any array DLPack takes)."""
        torch, bs = self.torch, self.args.batch_size
        import torch.nn.functional as F

        order = torch.from_dlpack(order) if not isinstance(order, torch.Tensor) else order
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        self.loss_sum = torch.zeros((), dtype=torch.float64, device="cuda")
        for s in range(0, order.shape[0], bs):
            idx = order[s:s + bs]
            xb, yb = self.x[idx], self.y[idx]
            logits = self.model(xb)
            loss = F.cross_entropy(logits, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.loss_sum += loss.detach() * xb.shape[0]
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3

    def facts(self) -> dict[str, Any]:
        """torch's version, CUDA, TF32 setting, and the last epoch's mean loss."""
        t = self.torch
        return {"version": t.__version__, "cuda": t.version.cuda,
                "allow_tf32_matmul": t.backends.cuda.matmul.allow_tf32,
                "last_epoch_loss": float(self.loss_sum) / self.args.samples}


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
    torch_run = TorchLoop(model, x, y, args) if args.torch else None  # the initial weights, before any step

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
    compared: dict[str, Any] = {}
    if torch_run is not None:
        torch_s = [torch_run.epoch(order), torch_run.epoch(order)]
        start, stop = xp.cuda.Event(), xp.cuda.Event()
        start.record()
        train_epoch(model, optimizer, x, y, order, batch_size=args.batch_size)
        stop.record()
        stop.synchronize()
        ours_s = [epoch_s, xp.cuda.get_elapsed_time(start, stop) / 1e3]
        compared = {"torch": torch_run.facts(), "order": "gpudense, torch, torch, gpudense",
                    "gpudense_epochs_s": ours_s, "torch_epochs_s": torch_s,
                    "ratio_gpudense_over_torch": statistics.median(ours_s) / statistics.median(torch_s)}
        print(f"torch: epochs {torch_s[0]:.3f} s and {torch_s[1]:.3f} s; gpudense {ours_s[0]:.3f} s and "
              f"{ours_s[1]:.3f} s; gpudense / torch (medians) {compared['ratio_gpudense_over_torch']:.3f}")

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
        **compared,
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
