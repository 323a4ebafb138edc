"""What checking the saved arrays costs: a Dense layer's forward+backward with gpudense.saved's check off and on.

The check (``gpudense.saved.check_saved(True)``, off by default) copies what
the forward pass saves and compares it bit for bit at the backward pass. This
script times ``layer(x); layer.backward(dy)`` of a ``Dense`` (with and
without a ReLU) both ways for the layer shapes of the CPU comparison, in
interleaved rounds (check off, on, on, off, ...), and reports the median
times and the ratio. Output: a table, and JSON / Markdown naming the CPU and
NumPy's BLAS.

    python bench/saved_check_cost.py --threads 1 --json cost.json --table cost.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

SHAPES = "32x784x1024,32x1024x10,128x64x64,1024x1024x1024,65536x64x64,8192x256x256,4096x784x10,1x4096x4096"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=SHAPES, help="comma-separated BATCHxINxOUT")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--seconds", type=float, default=2.0, help="time per shape and setting (default 2 s)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--table", help="write a Markdown table here")
    args = p.parse_args(argv)
    try:
        args.shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--shapes: expected BATCHxINxOUT items; got {args.shapes!r}")
    if any(len(s) != 3 or min(s) < 1 for s in args.shapes) or args.threads < 1:
        p.error("--shapes needs three positive sizes each; --threads >= 1")
    return args


def measure(dims: tuple[int, int, int], activation: str | None, seconds: float) -> dict:
    from gpudense.layer import Dense
    from gpudense.saved import check_saved

    batch, n_in, n_out = dims
    gen = np.random.default_rng(0)
    x = gen.standard_normal((batch, n_in)).astype(np.float32)
    dy = gen.standard_normal((batch, n_out)).astype(np.float32)
    layer = Dense(n_in, n_out, activation=activation, backend="numpy", rng=0)

    def step() -> None:
        layer(x)
        layer.backward(dy, input_grad=True)
        layer.zero_grad()

    previous = check_saved(False)
    try:
        t0 = time.perf_counter()
        step()
        one = max(time.perf_counter() - t0, 1e-6)
        calls = max(1, int(seconds / 2 / one / 20))  # 20 rounds per setting
        samples: dict[str, list[float]] = {"off": [], "on": []}
        for r in range(20):
            for setting in (("off", "on") if r % 2 == 0 else ("on", "off")):
                check_saved(setting == "on")
                step()  # warm-up of this setting
                t0 = time.perf_counter()
                for _ in range(calls):
                    step()
                samples[setting].append((time.perf_counter() - t0) / calls)
    finally:
        check_saved(previous)
    off, on = statistics.median(samples["off"]), statistics.median(samples["on"])
    return {"batch": batch, "n_in": n_in, "n_out": n_out, "activation": activation, "off_s": off, "on_s": on,
            "ratio": on / off, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    from gpudense.backends.numpy_backend import cpu_model
    from gpudense.benchmark.machine import blas_info
    from gpudense.benchmark.report import markdown_table

    args = parse_args(argv)
    rows = []
    with threadpool_limits(args.threads, user_api="blas"):
        for dims in args.shapes:
            for activation in (None, "relu"):
                r = measure(dims, activation, args.seconds)
                rows.append(r)
                print(f"{'x'.join(map(str, dims)):>16s} {activation or 'linear':6s}: off {r['off_s'] * 1e3:9.3f} ms, "
                      f"on {r['on_s'] * 1e3:9.3f} ms, on/off {r['ratio']:.2f}", flush=True)
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} kernel {b.get('architecture')}"
                     for b in blas_info() if b.get("user_api") == "blas") or "unknown"
    doc = {"benchmark": "gpudense.saved check: Dense forward+backward with the check off and on",
           "machine": {"cpu": cpu_model(), "platform": platform.platform(), "numpy": np.__version__, "blas": blas},
           "threads": args.threads, "rows": rows}
    table = [f"# Checking saved arrays: Dense forward+backward, float32, {args.threads} BLAS thread(s)", "",
             f"- machine: {doc['machine']['cpu']}; NumPy {np.__version__}; BLAS: {blas}", ""]
    table += markdown_table(["batch x in x out", "activation", "check off ms", "check on ms", "on / off"],
                            [[f"{r['batch']}x{r['n_in']}x{r['n_out']}", r["activation"] or "none",
                              f"{r['off_s'] * 1e3:.3f}", f"{r['on_s'] * 1e3:.3f}", f"{r['ratio']:.2f}"]
                             for r in rows], "llrrr")
    for path, text in ((args.json, json.dumps(doc, indent=2)), (args.table, "\n".join(table))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
