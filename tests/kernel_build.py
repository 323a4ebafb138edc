"""Reading compiler reports of the kernel builds (nvcc and NVRTC), shared by tests/cuda."""

from __future__ import annotations

import re


def parse_ptxas(log: str) -> dict[str, dict[str, int]]:
    """``{entry: {registers, stack, spill_stores, spill_loads}}`` from ``-Xptxas -v`` output."""
    found: dict[str, dict[str, int]] = {}
    for part in re.split(r"Compiling entry function ", log)[1:]:
        name = re.match(r"'([^']+)'", part).group(1)
        regs = re.search(r"Used (\d+) registers", part)
        frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", part)
        assert regs and frame, f"unparsed ptxas report for {name}:\n{part}"
        found[name] = {
            "registers": int(regs.group(1)),
            "stack": int(frame.group(1)),
            "spill_stores": int(frame.group(2)),
            "spill_loads": int(frame.group(3)),
        }
    return found
