"""The bias-gradient device check's rows, table and JSON, without a GPU; the script's options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import device_check as dc

REPO = Path(__file__).resolve().parents[2]


def test_device_check_formats_synthetic_results(tmp_path):
    rows = [
        dc.result_row("kernel", (65536, 4096), "float32", times_ms=[1.0, 2.0, 3.0], bytes_moved=2_000_000_000,
                      copy_gbps=4000.0),
        dc.result_row("dy.sum(axis=0)", (32, 1024), "float16", times_ms=[0.5], bytes_moved=65536, copy_gbps=4000.0),
    ]
    assert rows[0]["median_ms"] == 2.0 and rows[0]["gbps"] == pytest.approx(1000.0)
    assert rows[0]["fraction_of_copy"] == pytest.approx(0.25)
    table = dc.results_table(rows)
    assert "65536x4096" in table and "float16" in table and "dy.sum(axis=0)" in table
    path = dc.write_json({"facts": {"device": "synthetic"}, "results": rows}, tmp_path)
    assert json.loads(Path(path).read_text())["results"][1]["shape"] == [32, 1024]


def test_results_table_gives_the_kernel_speed_up_per_shape_and_dtype(tmp_path):
    kernel, other = dc.METHODS[0], dc.METHODS[1]
    rows = [
        dc.result_row(kernel, (32, 1024), "float32", times_ms=[0.5], bytes_moved=10**6, copy_gbps=4.0),
        dc.result_row(other, (32, 1024), "float32", times_ms=[1.5], bytes_moved=10**6, copy_gbps=4.0),
        dc.result_row(other, (32, 1024), "float16", times_ms=[1.0], bytes_moved=10**6, copy_gbps=0.0),
    ]
    lines = dc.results_table(rows).splitlines()
    assert lines[0] == "| shape | dtype | method | median ms | GB/s | % copy | kernel x |"
    assert lines[2] == f"| 32x1024 | float32 | {kernel} | 0.5000 | 2.0 | 50.0 |  |"
    assert lines[3] == f"| 32x1024 | float32 | {other} | 1.5000 | 0.7 | 16.7 | 3.00 |"
    assert lines[4] == f"| 32x1024 | float16 | {other} | 1.0000 | 1.0 | - |  |"  # no copy, no kernel row
    assert lines[-1].startswith("kernel x: how many times longer")
    # NaN (no copy bandwidth) is written as null
    path = dc.write_json({"results": rows}, tmp_path / "sub")
    assert json.loads(path.read_text())["results"][2]["fraction_of_copy"] is None


def test_device_check_script_help_runs_without_a_gpu():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "device_check.py"), "--help"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    for option in ("--out", "--repeat", "--quick"):
        assert option in out.stdout
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "device_check.py"), "--repeat", "0"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "expected an integer >= 1" in bad.stderr


def test_run_device_check_on_a_stand_in_cupy_backend(tmp_path, stand_in_cupy):
    """The whole check, on a stand-in for the CuPy backend (NumPy underneath; see conftest.py)."""
    lines = []
    path, data = dc.run_device_check(tmp_path / "out", quick=True, copy_bytes=1 << 20, log=lines.append)
    assert path == tmp_path / "out" / "device_check.json"
    written = json.loads(path.read_text())
    assert set(written) == {"facts", "copy", "copy_at_end", "results"}
    facts = written["facts"]
    assert facts["l2_bytes"] == stand_in_cupy.xp.L2_BYTES and facts["device"].startswith("0: stand-in")
    for key in ("date_utc", "gpudense", "numpy", "python", "memory_free_bytes", "memory_total_bytes"):
        assert key in facts
    for copy in (written["copy"], written["copy_at_end"]):
        assert copy["bytes_copied"] == 1 << 20 and copy["verified"] is True
        assert len(copy["times_ms"]) == 5 and copy["gbps"] > 0  # --quick: 5 samples
    rows = written["results"]
    assert [(tuple(r["shape"]), r["dtype"], r["method"]) for r in rows] == [
        (shape, dtype, method) for shape in dc.SWEEP[-2:] for dtype in dc.DTYPES for method in dc.METHODS]
    for r in rows:
        batch, m = r["shape"]
        itemsize = 4 if r["dtype"] == "float32" else 2
        assert r["bytes"] == (batch * m + m) * itemsize  # dy read, db written
        assert r["repeats"] == 5 and r["gbps"] > 0
        assert r["fraction_of_copy"] == pytest.approx(r["gbps"] / written["copy"]["gbps"])
        # rotating buffers larger than twice the L2
        assert r["buffer_bytes_total"] > 2 * stand_in_cupy.xp.L2_BYTES and r["buffers"] >= 2
    for r in rows[::3]:  # the kernel's rows hold its error against a float64 sum
        assert r["method"] == dc.METHODS[0]
        # one rounding of db to the dtype: float16 2**-11, bfloat16 2**-8 relative at most
        assert r["rel_error_vs_float64"] < {"float32": 1e-6, "float16": 1e-3, "bfloat16": 2.0**-8}[r["dtype"]]
    assert lines[0].startswith("date_utc=") and lines[-1].startswith("device-to-device copy at the end")
    assert sum(ln.startswith("timed ") for ln in lines) == len(dc.SWEEP[-2:]) * len(dc.DTYPES)
    assert stand_in_cupy.xp.freed >= 6  # the pool is emptied after the copies and each shape
