"""gpudense training vs the equivalent hand-written PyTorch loop on the CPU: epoch times and their ratio.

Both train the same MLP (ReLU, softmax cross-entropy, Adam) on the same data
with the same initial weights (torch gets gpudense's, ``weight = w.T``), the
same batch order (one NumPy permutation per epoch from ``--seed``), the same
batch size and the same number of threads (NumPy's BLAS limited with
threadpoolctl; ``torch.set_num_threads``). gpudense runs its own training
loop (``gpudense.training.train_epoch``, the loop of ``gpudense train``);
torch runs the loop a PyTorch user writes: ``model(xb)``,
``F.cross_entropy``, ``zero_grad(set_to_none=True)``, ``backward()``,
``opt.step()``, summing the loss and the correct predictions as tensors.

Each run (one contender, all its epochs) is its own process, so neither
library's threads, caches or allocator state touch the other's; runs
alternate (gpudense, torch, torch, gpudense, ...) ``--repeats`` times for
every thread count. Reported per contender and thread count: the median
epoch time (of the epochs after the first, which pays one-time costs, when
there are several), and the ratio gpudense / torch. For digits the whole
``python -m gpudense train`` command is also timed (``--command-runs``).
The first-epoch mean losses of the two must agree within 1% (the same math,
rounded differently by the two BLAS libraries); the script says whether they do.

JSON (``--json``): settings, the machine (CPU model), NumPy's BLAS pools
(threadpoolctl: library, version, kernel), torch's BLAS (MKL version, CPU
path), every run's per-epoch times, losses and accuracies, and the ratios.

    python bench/train_compare.py --dataset digits --threads 1 --repeats 3 --json digits.json
    python bench/train_compare.py --dataset synthetic --threads 1,2 --repeats 2 --json synthetic.json
    python bench/train_compare.py --dataset synthetic --samples 20000 --hidden 256,256   # a quick try
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
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from gpudense._blas import shorten_openblas_spin  # noqa: E402

shorten_openblas_spin()  # before NumPy loads OpenBLAS, as `gpudense train` does

import numpy as np  # noqa: E402

CONTENDERS = ("gpudense", "torch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["digits", "synthetic"], default="digits")
    p.add_argument("--samples", type=int, default=200_000, help="synthetic: training samples (default 200,000)")
    p.add_argument("--test-samples", type=int, default=10_000, help="synthetic: test samples (default 10,000)")
    p.add_argument("--features", type=int, default=784, help="synthetic: features (default 784)")
    p.add_argument("--hidden", default=None, help="hidden sizes (default: digits 256; synthetic 1024,1024)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: digits 20; synthetic 1)")
    p.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default: digits 0.002, as "
                                                          "gpudense train; synthetic 0.001)")
    p.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    p.add_argument("--repeats", type=int, default=2, help="runs per contender and thread count (default 2)")
    p.add_argument("--torch-adam", choices=["default", "foreach", "fused"], default="default",
                   help="torch.optim.Adam's implementation (default: torch's own choice)")
    p.add_argument("--command-runs", type=int, default=5,
                   help="digits: timed runs of the whole `python -m gpudense train` (default 5; 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--table", help="write a Markdown summary (machine, BLAS, epoch times, ratios) here")
    p.add_argument("--child", nargs=3, metavar=("CONTENDER", "THREADS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    digits = args.dataset == "digits"
    args.hidden = [int(h) for h in (args.hidden or ("256" if digits else "1024,1024")).split(",") if h.strip()]
    args.epochs = args.epochs or (20 if digits else 1)
    args.lr = args.lr or (2e-3 if digits else 1e-3)
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        p.error(f"--threads: expected comma-separated integers; got {args.threads!r}")
    if min(args.threads) < 1 or args.repeats < 1 or args.epochs < 1:
        p.error("--threads, --repeats and --epochs must be positive")
    return args


def load_data(args: argparse.Namespace) -> Any:
    from gpudense.data import load_digits, make_synthetic

    if args.dataset == "digits":
        return load_digits(seed=args.seed)
    total = args.samples + args.test_samples
    return make_synthetic(total, args.features, 10, seed=args.seed, test_fraction=args.test_samples / total)


def gpudense_model(args: argparse.Namespace, ds: Any) -> Any:
    from gpudense.nn import MLP

    return MLP([ds.n_features, *args.hidden, ds.n_classes], backend="numpy", rng=args.seed)


def run_gpudense(args: argparse.Namespace, ds: Any) -> list[dict[str, float]]:
    from gpudense._blas import step_threads
    from gpudense.optim import Adam
    from gpudense.training import evaluate, train_epoch

    model = gpudense_model(args, ds)
    opt = Adam(model, lr=args.lr)
    opt.threads = step_threads(model.backend)  # as `gpudense train` sets it
    rng = np.random.default_rng(args.seed)
    n = ds.x_train.shape[0]
    epochs = []
    for _ in range(args.epochs):
        order = rng.permutation(n)
        t0 = time.perf_counter()
        loss_sum, correct = train_epoch(model, opt, ds.x_train, ds.y_train, order, batch_size=args.batch_size)
        seconds = time.perf_counter() - t0
        epochs.append({"seconds": seconds, "loss": float(loss_sum) / n, "train_acc": int(correct) / n,
                       "test_acc": evaluate(model, ds.x_test, ds.y_test)})
    return epochs


def run_torch(args: argparse.Namespace, ds: Any) -> list[dict[str, float]]:
    import torch
    import torch.nn.functional as F

    layers: list[Any] = []
    for i, dense in enumerate(b for b in gpudense_model(args, ds).blocks if hasattr(b, "torch_state")):
        if i:
            layers.append(torch.nn.ReLU())
        lin = torch.nn.Linear(dense.in_features, dense.out_features)
        lin.load_state_dict({k: torch.from_numpy(v) for k, v in dense.torch_state().items()})
        layers.append(lin)
    model = torch.nn.Sequential(*layers)
    kw = {"foreach": True} if args.torch_adam == "foreach" else {"fused": True} if args.torch_adam == "fused" else {}
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, **kw)
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    x_test, y_test = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    rng = np.random.default_rng(args.seed)
    n = ds.x_train.shape[0]
    epochs = []
    for _ in range(args.epochs):
        order = torch.from_numpy(rng.permutation(n))
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        for start in range(0, n, args.batch_size):
            idx = order[start:start + args.batch_size]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * xb.shape[0]
            correct += (logits.detach().argmax(1) == yb).sum()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            acc = float((model(x_test).argmax(1) == y_test).double().mean())
        epochs.append({"seconds": seconds, "loss": float(loss_sum) / n, "train_acc": int(correct) / n,
                       "test_acc": acc})
    return epochs


def child(args: argparse.Namespace, contender: str, threads: int, out: str) -> None:
    os.environ.setdefault("GPUDENSE_BACKEND", "numpy")
    from threadpoolctl import threadpool_limits

    ds = load_data(args)
    with threadpool_limits(threads, user_api="blas"):
        if contender == "torch":
            import torch

            torch.set_num_threads(threads)
            epochs = run_torch(args, ds)
        else:
            epochs = run_gpudense(args, ds)
    Path(out).write_text(json.dumps({"contender": contender, "threads": threads, "epochs": epochs}))


def command_times(runs: int) -> list[float]:
    """Wall seconds of whole ``python -m gpudense train`` runs (digits, the default job), output discarded."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gpudense", "train"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=REPO)
        times.append(time.perf_counter() - t0)
    return times


def epoch_time(run: dict[str, Any]) -> float:
    """The run's typical epoch: the median of the epochs after the first (the first alone if only one)."""
    seconds = [e["seconds"] for e in run["epochs"]]
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def machine() -> dict[str, Any]:
    from gpudense.backends.numpy_backend import cpu_model
    from gpudense.benchmark.isolation import torch_facts
    from gpudense.benchmark.machine import blas_info

    return {"cpu": cpu_model(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "numpy_blas": blas_info(), "torch": torch_facts()}


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        contender, threads, out = args.child
        child(args, contender, int(threads), out)
        return 0
    own_argv = list(argv if argv is not None else sys.argv[1:])
    runs: list[dict[str, Any]] = []
    for threads in args.threads:
        for r in range(args.repeats):
            for contender in (CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]):
                with tempfile.TemporaryDirectory() as tmp:
                    out = os.path.join(tmp, "run.json")
                    subprocess.run([sys.executable, __file__, *_without(own_argv, "--json"), "--child", contender,
                                    str(threads), out], check=True)
                    run = json.loads(Path(out).read_text())
                run["epoch_time_s"] = epoch_time(run)
                runs.append(run)
                first = ", ".join(format(e["seconds"], ".3f") for e in run["epochs"][:5])
                more = ", ..." if len(run["epochs"]) > 5 else ""
                print(f"{contender:8s} {threads} thread(s): epoch {run['epoch_time_s']:.3f} s (epochs {first}{more}); "
                      f"loss {run['epochs'][0]['loss']:.4f} after epoch 1; test acc "
                      f"{run['epochs'][-1]['test_acc']:.4f}", flush=True)
    summary = []
    for threads in args.threads:
        per = {c: [r["epoch_time_s"] for r in runs if r["contender"] == c and r["threads"] == threads]
               for c in CONTENDERS}
        g, t = statistics.median(per["gpudense"]), statistics.median(per["torch"])
        losses = {c: [r["epochs"][0]["loss"] for r in runs if r["contender"] == c and r["threads"] == threads]
                  for c in CONTENDERS}
        # the same math, rounded differently (OpenBLAS vs MKL) and amplified a little by training
        agree = abs(losses["gpudense"][0] - losses["torch"][0]) <= 1e-2 * abs(losses["torch"][0])
        summary.append({"threads": threads, "gpudense_epoch_s": g, "torch_epoch_s": t, "ratio": g / t,
                        "first_epoch_loss": {c: v[0] for c, v in losses.items()}, "losses_agree": agree})
        print(f"{threads} thread(s): gpudense {g:.3f} s / torch {t:.3f} s per epoch = {g / t:.2f}x; "
              f"first-epoch losses {'agree' if agree else 'DIFFER'} "
              f"({losses['gpudense'][0]:.6f} vs {losses['torch'][0]:.6f})")
    doc: dict[str, Any] = {
        "benchmark": "gpudense vs an equivalent PyTorch training loop, CPU",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": " ".join(["python", "bench/train_compare.py", *own_argv]),
        "settings": {k: getattr(args, k) for k in ("dataset", "samples", "test_samples", "features", "hidden",
                                                   "batch_size", "epochs", "lr", "threads", "repeats",
                                                   "torch_adam", "seed")},
        "machine": machine(), "summary": summary, "runs": runs,
    }
    if args.dataset == "digits" and args.command_runs:
        cmd = command_times(args.command_runs)
        doc["gpudense_train_command_s"] = {"runs": cmd, "median": statistics.median(cmd)}
        print(f"python -m gpudense train: median {statistics.median(cmd):.2f} s over {len(cmd)} runs "
              f"({', '.join(f'{v:.2f}' for v in cmd)})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(summary_table(doc) + "\n")
        print(f"wrote {args.table}")
    return 0


def summary_table(doc: dict[str, Any]) -> str:
    """A Markdown summary of a result document: what ran where, then one row per thread count."""
    from gpudense.benchmark.report import markdown_table

    m, s = doc["machine"], doc["settings"]
    pools = "; ".join(f"{b.get('internal_api')} {b.get('version')} kernel {b.get('architecture')}"
                      for b in m["numpy_blas"] if b.get("user_api") == "blas") or "unknown"
    t = m["torch"]
    sizes = "-".join(str(v) for v in s["hidden"])
    lines = [
        f"# gpudense vs PyTorch training loop: {s['dataset']}, hidden {sizes}, batch {s['batch_size']}, "
        f"Adam lr {s['lr']}",
        "",
        f"{doc['date_utc']}, commit {doc['git_commit']}; `{doc['command']}`",
        "",
        f"- machine: {m['cpu']}, {m['platform']}",
        f"- NumPy {m['numpy']} BLAS: {pools}",
        f"- torch {t.get('version')} BLAS: {t.get('blas')} ({t.get('blas_version')}), CPU path "
        f"{t.get('cpu_capability')}; torch.optim.Adam: {s['torch_adam']}",
        f"- epochs per run {s['epochs']}, runs per contender and thread count {s['repeats']} "
        "(alternating, each its own process); epoch time: median of the epochs after the first",
        "",
    ]
    rows = [[str(r["threads"]), f"{r['gpudense_epoch_s']:.3f}", f"{r['torch_epoch_s']:.3f}", f"{r['ratio']:.2f}",
             "yes" if r["losses_agree"] else "NO"] for r in doc["summary"]]
    lines += markdown_table(["threads", "gpudense s/epoch", "torch s/epoch", "gpudense / torch",
                             "first-epoch losses agree"], rows, "rrrrl")
    if "gpudense_train_command_s" in doc:
        c = doc["gpudense_train_command_s"]
        lines += ["", f"Whole `python -m gpudense train` (default digits run): median {c['median']:.2f} s "
                      f"over {len(c['runs'])} runs ({', '.join(f'{v:.2f}' for v in c['runs'])})."]
    return "\n".join(lines)


def _without(argv: list[str], *flags: str) -> list[str]:
    """``argv`` less each of ``flags`` and its value."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif not any(a.startswith(f + "=") for f in flags):
            out.append(a)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
