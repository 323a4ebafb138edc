"""The fused activation-gradient check (bench/fused_check.py) and the compile smoke test (bench/compile_smoke.py), without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import compile_smoke
import device_check as dc
import fused_check as fc

REPO = Path(__file__).resolve().parents[2]


def test_fused_check_on_a_stand_in_cupy_backend(tmp_path, stand_in_cupy):
    lines = []
    path, data = fc.run_fused_check(tmp_path, quick=True, copy_bytes=1 << 20, log=lines.append)
    assert path == tmp_path / "fused_check.json"
    written = json.loads(path.read_text())
    assert written["complete"] is True and set(written) == {"facts", "copy", "fused", "epilogues", "complete"}
    rows = written["fused"]
    assert [(tuple(r["shape"]), r["dtype"], r["activation"], r["method"]) for r in rows] == [
        (fc.FUSED_SWEEP[-1], d, a, m) for d in fc.FUSED_DTYPES for a in fc.FUSED_ACTIVATIONS
        for m in fc.FUSED_METHODS]
    batch, m = fc.FUSED_SWEEP[-1]
    for r in rows:
        item = 4 if r["dtype"] == "float32" else 2
        assert r["bytes"] == 3 * batch * m * item + m * item and r["repeats"] == 5 and r["gbps"] > 0
    for r in rows[::2]:  # the fused row: its db against the unfused one (here the same formulas)
        assert r["db_rel_diff_vs_unfused"] <= {"float32": 1e-5, "bfloat16": 2.0**-7}[r["dtype"]]
    assert sum(ln.startswith("timed fused") for ln in lines) == len(fc.FUSED_DTYPES) * len(fc.FUSED_ACTIVATIONS)
    table = dc.results_table(rows, baseline=fc.FUSED_METHODS[0])
    assert "(gelu)" in table and "kernel x" in table


def test_epilogue_rows_skip_cleanly_without_nvmath(monkeypatch, stand_in_cupy):
    monkeypatch.setitem(sys.modules, "nvmath", None)  # `import nvmath...` raises ImportError
    rows = fc.time_epilogues(stand_in_cupy, (64, 16, 8), "float32", repeat=3)
    assert [r["method"] for r in rows] == list(fc.EPILOGUE_METHODS)
    ours = [r for r in rows if r["method"].startswith("gpudense")]
    theirs = [r for r in rows if "nvmath" in r["method"]]
    assert all(r["median_ms"] > 0 and r["tflops"] > 0 and "skipped" not in r for r in ours)
    assert all(r["skipped"].startswith("nvmath-python is not importable") for r in theirs)
    table = dc.results_table([{**r, "shape": r["shape"][:2], "fraction_of_copy": float("nan"), "gbps": 0.0}
                              for r in rows if "skipped" in r])
    assert "skipped, nvmath-python is not importable" in table


def test_compile_smoke_says_what_is_missing_on_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    problem = compile_smoke.compile_smoke()
    assert problem.startswith("CuPy is not importable") and "\n" not in problem


def test_the_smoke_script_fails_with_one_line_where_cuda_is_unusable():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "compile_smoke.py")],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("compile smoke test failed: ")


def test_the_script_takes_its_options():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "fused_check.py"), "--help"],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    for option in ("--out", "--repeat", "--quick"):
        assert option in out.stdout
