"""Per-epoch time of a synthetic training run with and without the optimizer's subnormal flush.

When ReLU units stop firing, Adam's first moment decays into the subnormal
range, where many x86 CPUs compute 10-100 times slower. This script trains
the same model on the same data (gpudense's own loop: gpudense.training.train_epoch)
in three modes, each in its own process:

* ``flush``: gpudense as it is (the optimizer flushes its state; see
  gpudense/optim/flatstate.py);
* ``noflush``: ``optimizer.flush_subnormals = False``;
* ``ftz``: no flush, but the CPU's flush-to-zero and denormals-are-zero
  modes switched on for the main thread (MXCSR; x86 only, needs a C
  compiler; every NumPy operation of the process is affected, which is why
  gpudense does not do this).

and reports, per epoch: seconds, the share of subnormal entries in the
optimizer state and the parameters, loss and test accuracy. The modes run
one after another, ``--repeats`` times in alternating order. Output: a table
and JSON (``--json``) with the machine (CPU model) and BLAS (threadpoolctl).

    python bench/subnormal_check.py                          # 30,000 x 784, hidden 1024,1024, 4 epochs
    python bench/subnormal_check.py --samples 10000 --epochs 3 --modes flush,noflush
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

MODES = ("flush", "noflush", "ftz")

FTZ_SOURCE = r"""
#include <xmmintrin.h>
void gpudense_set_ftz_daz(void) { _mm_setcsr(_mm_getcsr() | 0x8040); }  /* FTZ (bit 15) | DAZ (bit 6) */
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=30_000, help="training samples (default 30,000)")
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--hidden", default="1024,1024")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--modes", default="flush,noflush,ftz")
    p.add_argument("--repeats", type=int, default=1, help="runs per mode, in alternating order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--table", help="write a Markdown summary (machine, BLAS, per-epoch times) here")
    p.add_argument("--child", help=argparse.SUPPRESS)  # run one mode, write JSON to this path
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        p.error(f"--modes: expected names from {MODES}; got {bad}")
    return args


def subnormal_share(arrays: list[np.ndarray]) -> float:
    total = sum(a.size for a in arrays)
    count = 0
    for a in arrays:
        m = np.abs(a)
        count += int(((m > 0) & (m < np.finfo(a.dtype).tiny)).sum())
    return count / max(total, 1)


def set_ftz_daz() -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError("ftz mode needs an x86-64 CPU and a C compiler (cc)")
    tmp = Path(tempfile.mkdtemp())
    (tmp / "ftz.c").write_text(FTZ_SOURCE)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(tmp / "ftz.so"), str(tmp / "ftz.c")], check=True)
    ctypes.CDLL(str(tmp / "ftz.so")).gpudense_set_ftz_daz()


def child(args: argparse.Namespace, mode: str) -> dict:
    from threadpoolctl import threadpool_limits

    from gpudense.data import make_synthetic
    from gpudense.nn import MLP
    from gpudense.optim import Adam
    from gpudense.training import evaluate, train_epoch

    if mode == "ftz":
        set_ftz_daz()
    hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
    n_test = max(1000, args.samples // 10)
    ds = make_synthetic(args.samples + n_test, args.features, 10, seed=args.seed,
                        test_fraction=n_test / (args.samples + n_test))
    model = MLP([args.features, *hidden, 10], backend="numpy", rng=args.seed)
    opt = Adam(model, lr=args.lr)
    opt.flush_subnormals = mode == "flush"
    rng = np.random.default_rng(args.seed)
    epochs = []
    with threadpool_limits(args.threads, user_api="blas"):
        for epoch in range(1, args.epochs + 1):
            order = rng.permutation(ds.x_train.shape[0])
            t0 = time.perf_counter()
            loss_sum, correct = train_epoch(model, opt, ds.x_train, ds.y_train, order, batch_size=args.batch_size)
            seconds = time.perf_counter() - t0
            state = [a for named in opt.state.values() for a in named.values()]
            params = [pg.param for pg in model.param_grads()]
            epochs.append({
                "epoch": epoch, "seconds": seconds,
                "loss": float(loss_sum) / ds.x_train.shape[0],
                "test_acc": evaluate(model, ds.x_test, ds.y_test),
                "subnormal_state": subnormal_share(state),
                "subnormal_m": subnormal_share(list(opt.state["m"].values())),
                "subnormal_params": subnormal_share(params),
            })
            print(f"  {mode:8s} epoch {epoch}: {seconds:7.2f} s  loss {epochs[-1]['loss']:.4f}  "
                  f"test acc {epochs[-1]['test_acc']:.4f}  subnormal m {epochs[-1]['subnormal_m']:.2%}",
                  file=sys.stderr, flush=True)
    return {"mode": mode, "epochs": epochs}


def machine() -> dict:
    from threadpoolctl import threadpool_info

    from gpudense.backends.numpy_backend import cpu_model

    return {"cpu": cpu_model(), "platform": platform.platform(), "numpy": np.__version__,
            "blas": [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                            "threading_layer")} for d in threadpool_info()]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        Path(args.child).write_text(json.dumps(child(args, args.modes[0])))
        return 0
    runs: list[dict] = []
    order: list[str] = []
    for r in range(args.repeats):
        order += args.modes if r % 2 == 0 else args.modes[::-1]
    passthrough = list(argv if argv is not None else sys.argv[1:])
    for mode in order:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "run.json")
            cmd = [sys.executable, __file__, *_without(passthrough, "--modes", "--repeats", "--json", "--table"),
                   "--modes", mode, "--child", out]
            subprocess.run(cmd, check=True)
            runs.append(json.loads(Path(out).read_text()))
    doc = {"benchmark": "subnormal flush: per-epoch time of a synthetic run", "settings": {
        k: getattr(args, k) for k in ("samples", "features", "hidden", "epochs", "batch_size", "lr", "threads",
                                      "repeats", "seed")}, "machine": machine(), "runs": runs}
    text = summary_table(doc)
    print(text)
    for path, content in ((args.json, json.dumps(doc, indent=2)), (args.table, text)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content + "\n")
            print(f"wrote {path}")
    return 0


def summary_table(doc: dict) -> str:
    """Markdown: the machine and BLAS, then per run its epoch times, last test accuracy and subnormal shares."""
    from gpudense.benchmark.report import markdown_table

    m, s = doc["machine"], doc["settings"]
    pools = "; ".join(f"{b.get('internal_api')} {b.get('version')} kernel {b.get('architecture')}, "
                      f"{b.get('threading_layer')}" for b in m["blas"] if b.get("internal_api")) or "unknown"
    epochs = max(len(r["epochs"]) for r in doc["runs"])
    rows = [[r["mode"], *(f"{e['seconds']:.2f}" for e in r["epochs"]), f"{r['epochs'][-1]['loss']:.4f}",
             f"{r['epochs'][-1]['test_acc']:.4f}", f"{r['epochs'][-1]['subnormal_m']:.2%}",
             f"{r['epochs'][-1]['subnormal_state']:.2%}"] for r in doc["runs"]]
    head = ["mode", *(f"epoch {e} s" for e in range(1, epochs + 1)), "last loss", "test acc",
            "subnormal m", "subnormal state"]
    return "\n".join([
        f"# Subnormal flush: synthetic {s['samples']} x {s['features']}, hidden {s['hidden']}, batch "
        f"{s['batch_size']}, Adam lr {s['lr']}, {s['threads']} BLAS thread(s)",
        "",
        f"- machine: {m['cpu']}, {m['platform']}; NumPy {m['numpy']}; BLAS: {pools}",
        "- flush: gpudense as it is; noflush: optimizer.flush_subnormals = False; ftz: noflush with the CPU's "
        "FTZ/DAZ bits set (main thread). Subnormal shares at the end of the last epoch.",
        "",
        *markdown_table(head, rows, "l" + "r" * (len(head) - 1)),
    ])


def _without(argv: list[str], *flags: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = True
            continue
        if any(a.startswith(f + "=") for f in flags):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
