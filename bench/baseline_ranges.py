"""Print the figures docs/benchmarking.md ("Baseline figures") quotes, from committed JSONs.

    python bench/baseline_ranges.py bench/results/cpu-2026-11-29.json \
        bench/results/cpu-2026-11-29-1thread.json

Per file (thread count): the ceilings, each shape's step time and paired ratio
to torch, the range of %FLOP and %BW over the matrix-product stages (forward,
dx, dw) and torch's step per shape, and the db ratios. Percentages are rounded
as the table rounds them; ranges are min-max over the stages named.
"""

from __future__ import annotations

import json
import sys

PRODUCTS = ("forward", "dx", "dw")


def pct_range(values: list[float]) -> str:
    lo, hi = round(100 * min(values)), round(100 * max(values))
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


def main(paths: list[str]) -> None:
    for path in paths:
        doc = json.load(open(path, encoding="utf-8"))
        c = doc["ceilings"]
        rows = doc["rows"]
        print(f"== {path}: threads {doc['settings']['threads']}, repeats "
              f"{doc['settings']['repeats']}, created {doc['created_utc']}")
        print(f"ceilings: copy {c['copy']['gbps']:.1f} GB/s ({c['copy']['how']}); "
              f"matmul float32 {c['matmul']['float32']['tflops']:.3f} TFLOP/s")
        print("torch:", doc["environment"].get("torch"), "| thread pools:",
              ", ".join(f"{b['internal_api']} {b['prefix']}" for b in doc["environment"]["blas"]))
        for shape in dict.fromkeys(r["shape"] for r in rows):
            rs = {r["stage"]: r for r in rows if r["shape"] == shape}
            step = rs["step"]
            prod = [rs[s] for s in PRODUCTS]
            line = (f"  {shape:12s} step {1e3 * step['stats']['median']:.3f} ms"
                    f" vs torch {step['ratios'].get('torch.step', float('nan')):.2f}x"
                    f" | forward/dx/dw %FLOP {pct_range([r['frac_flops'] for r in prod])}"
                    f" %BW {pct_range([r['frac_bw'] for r in prod])}")
            if "torch.step" in rs:
                t = rs["torch.step"]
                line += f" | torch.step %FLOP {pct_range([t['frac_flops']])} %BW {pct_range([t['frac_bw']])}"
            line += " | db/db.sum {:.2f} db/db.ones {:.2f}".format(
                rs["db"]["ratios"]["db.sum"], rs["db"]["ratios"]["db.ones"])
            print(line)
        for group in (("square", "transformer"), ("tall-narrow",)):
            prod = [r for r in rows if r["shape"] in group and r["stage"] in PRODUCTS]
            print(f"  {'+'.join(group)} forward/dx/dw: %FLOP {pct_range([r['frac_flops'] for r in prod])},"
                  f" %BW {pct_range([r['frac_bw'] for r in prod])}")
    print("== all files together")
    rows = [r for p in paths for r in json.load(open(p, encoding="utf-8"))["rows"]]
    for group in (("square", "transformer"), ("tall-narrow",)):
        prod = [r for r in rows if r["shape"] in group and r["stage"] in PRODUCTS]
        tor = [r for r in rows if r["shape"] in group and r["stage"] == "torch.step"]
        print(f"  {'+'.join(group)} forward/dx/dw: %FLOP {pct_range([r['frac_flops'] for r in prod])},"
              f" %BW {pct_range([r['frac_bw'] for r in prod])}; torch.step: %FLOP "
              f"{pct_range([r['frac_flops'] for r in tor])}, %BW {pct_range([r['frac_bw'] for r in tor])}")


if __name__ == "__main__":
    main(sys.argv[1:])
