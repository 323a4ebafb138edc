"""The GPU device check: the bias-gradient kernel and the fused activation gradient, timed.

Run by bench/device_check.sh and bench/gpu_validation.sh, or on its own from
a plain checkout:

    PYTHONPATH=$PWD python3 bench/device_check.py [--out DIR] [--repeat N] [--quick] [--stage STAGE]
    PYTHONPATH=$PWD python3 bench/device_check.py --smoke

``--stage bias`` (default) times gpudense's bias-gradient kernel against
``dy.sum(axis=0)`` and ``ones @ dy`` (:mod:`gpudense.benchmark.device_check`:
CUDA events, warm-up, medians, rotating buffers larger than twice the L2,
GB/s and the fraction of a device-to-device copy timed in the same run) into
``DIR/device_check.json``; ``--stage fused`` times the fused activation
gradient against the unfused way and, where nvmath-python imports,
cuBLASLt's epilogues (:mod:`gpudense.benchmark.fused_check`) into
``DIR/fused_check.json``. Both files are rewritten after every shape, so a
stopped run keeps what it measured. ``DIR`` is ``$OUT`` when set, else
bench/results/. ``--smoke`` only checks, in a second or two, that NVRTC and
the CUDA headers are usable, and says what is missing if not (exit status 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from gpudense.benchmark.device_check import results_table, run_device_check
from gpudense.cli._common import int_at_least


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"),
                        help="directory for the JSON (default: $OUT, else bench/results)")
    parser.add_argument("--repeat", type=int_at_least(1), default=25, help="timed samples per measurement")
    parser.add_argument("--quick", action="store_true", help="only the smallest shapes, 5 samples")
    parser.add_argument("--stage", choices=["bias", "fused"], default="bias",
                        help="bias: the bias-gradient kernel (default); fused: the fused activation gradient "
                             "and cuBLASLt's epilogues")
    parser.add_argument("--smoke", action="store_true",
                        help="only check that NVRTC and the CUDA headers work (a second or two)")
    args = parser.parse_args(argv)

    if args.smoke:
        from gpudense.benchmark.fused_check import compile_smoke

        problem = compile_smoke()
        if problem is not None:
            print(f"compile smoke test failed: {problem}", file=sys.stderr)
            return 1
        print("compile smoke test: NVRTC and the CUDA headers work")
        return 0
    if args.stage == "fused":
        from gpudense.benchmark.fused_check import run_fused_check

        path, data = run_fused_check(args.out, repeat=args.repeat, quick=args.quick,
                                     log=lambda line: print(line, flush=True))
        print(f"raw results: {path}")
        print(results_table(data["fused"], baseline="gpudense fused act'+db kernel"))
        for row in data["epilogues"]:
            print(row["method"], row["dtype"], "x".join(map(str, row["shape"])),
                  row.get("skipped") or f"{row['median_ms']:.4f} ms, {row['tflops']:.1f} TFLOP/s")
        return 0
    path, data = run_device_check(args.out, repeat=args.repeat, quick=args.quick,
                                  log=lambda line: print(line, flush=True))
    print(f"raw results: {path}")
    print(results_table(data["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
