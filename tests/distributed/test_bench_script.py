"""bench/distributed_bench.py at its smoke size: it launches its ranks and writes the JSON it promises.

Only the shape of the report is checked; its figures mean nothing at this size (and timing is never asserted).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mpi_launch import MPIEXEC

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "distributed_bench.py"


def test_smoke_run_writes_the_report(tmp_path):
    if not MPIEXEC.exists():
        pytest.skip(f"needs mpiexec next to {sys.executable}: pip install 'gpudense[distributed]'")
    out = tmp_path / "d.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--backend", "numpy", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["backend"] == "numpy"
    assert report["communicator"].startswith("MPI (")
    assert [(r["ranks"], r["bytes"]) for r in report["allreduce"]] == [(2, 2**10), (2, 2**14), (2, 2**16)]
    assert all(r["seconds"] > 0 and r["busbw_GBps"] == pytest.approx(r["algbw_GBps"]) for r in report["allreduce"])
    assert [r["ranks"] for r in report["epoch"]] == [1, 2]
    assert report["epoch"][0]["speedup"] == 1.0
    assert {r["global_batch"] for r in report["epoch"]} == {256}
    assert report["epoch"][0]["samples"] == report["epoch"][1]["samples"] == 2000
