"""Every kernels/*.cu compiles on its own with nvcc for sm_80 and sm_90, with no register spill.

Runs in CI, where there is no GPU but nvcc is installed; skipped (with the
reason) only where nvcc is absent. ``-Xptxas -v`` reports, per entry point,
registers, stack frame and spill bytes; any spill or stack frame fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpudense.backends.cupy_backend import ENTRY_POINTS

KERNELS = sorted((Path(__file__).resolve().parent.parent / "kernels").glob("*.cu"))
ARCHS = ["sm_80", "sm_90"]
NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if Path(p).is_file()), None
)

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (not on PATH or in /usr/local/cuda/bin)")


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


def test_there_are_kernels():
    assert "bias_grad.cu" in [p.name for p in KERNELS]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("path", KERNELS, ids=[p.name for p in KERNELS])
def test_kernel_compiles_without_spills(tmp_path, path, arch):
    res = subprocess.run(
        [NVCC, "-cubin", f"-arch={arch}", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"), str(path)],
        capture_output=True, text=True, timeout=300,
    )
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"nvcc failed on {path.name} for {arch}:\n{log}"
    report = parse_ptxas(log)
    assert report, f"no entry function reported for {path.name}:\n{log}"
    bad = {n: r for n, r in report.items() if r["spill_stores"] or r["spill_loads"] or r["stack"]}
    assert not bad, f"{path.name} ({arch}) spills or uses a stack frame: {bad}"
    if path.name == "bias_grad.cu":
        assert sorted(report) == sorted(ENTRY_POINTS), report


def test_parse_ptxas_reads_spills():
    log = (
        "ptxas info    : Compiling entry function 'k' for 'sm_90'\n"
        "ptxas info    : Function properties for k\n"
        "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers\n"
    )
    assert parse_ptxas(log) == {"k": {"registers": 255, "stack": 8, "spill_stores": 4, "spill_loads": 4}}
