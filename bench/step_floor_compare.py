"""One Dense step against its BLAS floor, for two source trees of gpudense, in one run.

    python3 bench/step_floor_compare.py OLD_TREE NEW_TREE [--processes N] [--json FILE] [--table FILE]

The step is what ``gpudense bench``'s "step" row times and training runs:
``layer(x)``, ``layer.backward(dy)``, ``layer.zero_grad()`` for a float32
layer of 128 x 64 x 64 (batch x in x out) with its gradients in kept arrays.
The floor is the backend's own work in that step: the three bare products
and the bias-gradient pass. Their ratio is what the Python around the math
costs. Each tree runs in processes of its own (``OPENBLAS_NUM_THREADS=1``),
the trees alternating process by process; in each process the step and the
floor alternate in 40 rounds of 200 calls after 2,000 warm-up calls, and the
medians over rounds are taken, then the median over processes. A tree is a
checkout or ``git archive`` of the project (its ``gpudense/`` is imported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CHILD = r"""
import sys, json, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import gpudense
assert gpudense.__file__.startswith(sys.argv[1]), gpudense.__file__
from gpudense import get_backend
from gpudense.layer import Dense
be = get_backend("numpy")
batch, n_in, n_out = 128, 64, 64
g = np.random.default_rng(0)
x = g.standard_normal((batch, n_in), dtype=np.float32)
w = (g.standard_normal((n_in, n_out), dtype=np.float32) / 8).astype(np.float32)
b = g.standard_normal(n_out, dtype=np.float32)
dy = g.standard_normal((batch, n_out), dtype=np.float32)
layer = Dense(n_in, n_out, dtype="float32", backend=be, rng=0)
layer.bind(w, b, np.empty_like(w), np.empty_like(b))
def step():
    layer(x); layer.backward(dy); layer.zero_grad()
def floor():
    be.matmul(x, w); be.matmul(dy, w.T); be.matmul(x.T, dy); be.bias_grad(dy)
N, R = 200, 40
pc = time.perf_counter
for f in (step, floor):
    for _ in range(2000): f()
st, fl, ratios = [], [], []
for r in range(R):
    t = {}
    for f in ((step, floor) if r % 2 == 0 else (floor, step)):
        t0 = pc()
        for _ in range(N): f()
        t[f] = (pc() - t0) / N
    st.append(t[step]); fl.append(t[floor]); ratios.append(t[step] / t[floor])
med = lambda a: sorted(a)[len(a) // 2]
print(json.dumps({"step_us": med(st) * 1e6, "floor_us": med(fl) * 1e6, "ratio": med(ratios)}))
"""


def machine() -> dict[str, str]:
    """The CPU, NumPy and its BLAS, as the child processes see them."""
    import numpy as np

    facts = {"python": platform.python_version(), "numpy": np.__version__, "cpu": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            facts["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if blas:
            facts["blas"] = f"{blas[0]['internal_api']} {blas[0]['version']} ({blas[0].get('architecture')})"
    except ImportError:
        facts["blas"] = "unknown (threadpoolctl not installed)"
    return facts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", help="the tree measured first (e.g. the base commit, from git archive)")
    p.add_argument("new", help="the tree it is compared with")
    p.add_argument("--names", default="old,new", help="what to call the two trees in the results, e.g. two commits")
    p.add_argument("--processes", type=int, default=6, help="processes per tree (default 6)")
    p.add_argument("--json", help="write the samples and medians here")
    p.add_argument("--table", help="write a Markdown table here")
    args = p.parse_args(argv)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    names = args.names.split(",")
    if len(names) != 2:
        p.error(f"--names takes two names, comma-separated; got {args.names!r}")
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    rows: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for i in range(args.processes):
        for name in (("old", "new") if i % 2 == 0 else ("new", "old")):
            done = subprocess.run([sys.executable, "-c", CHILD, trees[name]], env=env, capture_output=True,
                                  text=True, check=True, cwd="/")
            rows[name].append(json.loads(done.stdout))
    summary = {name: {k: statistics.median(r[k] for r in rs) for k in ("step_us", "floor_us", "ratio")}
               for name, rs in rows.items()}
    lines = ["| tree | step (us) | floor (us) | step / floor |", "|---|---:|---:|---:|"]
    for name, s in summary.items():
        label = names[0] if name == "old" else names[1]
        lines.append(f"| {label} | {s['step_us']:.1f} | {s['floor_us']:.1f} | {s['ratio']:.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
                       "threads": 1, "shape": [128, 64, 64], "dtype": "float32",
                       "trees": {"old": names[0], "new": names[1]},
                       "samples": rows, "medians": summary}, f, indent=1)
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
