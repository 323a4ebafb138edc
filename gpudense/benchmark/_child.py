"""The child process of a sweep: ``python -m gpudense.benchmark._child OUT`` (used by :func:`~gpudense.benchmark.sweep.run_child`).

Reads ``{"config": BenchConfig.to_dict(), "copy_gbps": float}`` as JSON on
stdin, runs :func:`~gpudense.benchmark.sweep.sweep` with it (the copy
ceiling taken from the parent), and writes the document to ``OUT`` as JSON
with NaN kept, for the parent to read back.
"""

from __future__ import annotations

import json
import sys
from typing import Sequence

from gpudense.benchmark.config import BenchConfig
from gpudense.benchmark.report import json_default
from gpudense.benchmark.sweep import sweep


def main(argv: Sequence[str], stdin_text: str) -> int:
    """Run the child: ``argv`` is ``[OUT]``; ``stdin_text`` the JSON payload. Returns the exit status."""
    if len(argv) != 1:
        print("usage: python -m gpudense.benchmark._child OUT.json < payload.json", file=sys.stderr)
        return 2
    payload = json.loads(stdin_text)
    config = BenchConfig.from_dict(payload["config"])
    doc = sweep(config, copy_gbps=float(payload["copy_gbps"]))
    with open(argv[0], "w", encoding="utf-8") as f:
        json.dump(doc, f, default=json_default)  # NaN kept: the parent reads it back
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], sys.stdin.read()))
