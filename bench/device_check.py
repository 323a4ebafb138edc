"""Time gpudense's bias-gradient kernel against ``dy.sum(axis=0)`` and ``ones @ dy`` on a GPU.

Run by bench/device_check.sh (after the GPU tests), or on its own from a
plain checkout:

    PYTHONPATH=$PWD python3 bench/device_check.py [--out DIR] [--repeat N] [--quick]

The measurement is :mod:`gpudense.benchmark.device_check` (CUDA events,
warm-up, medians, rotating buffers larger than twice the L2, GB/s and the
fraction of a device-to-device copy timed in the same run). Raw results go
to ``DIR/device_check.json`` (``$OUT`` when set, else bench/results/); the
table is printed last.
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
                        help="directory for device_check.json (default: $OUT, else bench/results)")
    parser.add_argument("--repeat", type=int_at_least(1), default=25, help="timed samples per measurement")
    parser.add_argument("--quick", action="store_true", help="only the two smallest shapes, 5 samples")
    args = parser.parse_args(argv)

    path, data = run_device_check(args.out, repeat=args.repeat, quick=args.quick,
                                  log=lambda line: print(line, flush=True))
    print(f"raw results: {path}")
    print(results_table(data["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
