"""bench/device_check.py imports and formats without a GPU."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_device_check_formats_synthetic_results(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        dc = importlib.import_module("device_check")
    finally:
        sys.path.remove(str(REPO / "bench"))
    rows = [
        dc.result_row("kernel", (65536, 4096), "float32", times_ms=[1.0, 2.0, 3.0], bytes_moved=2_000_000_000,
                      copy_gbps=4000.0),
        dc.result_row("dy.sum(axis=0)", (32, 1024), "float16", times_ms=[0.5], bytes_moved=65536, copy_gbps=4000.0),
    ]
    assert rows[0]["median_ms"] == 2.0 and rows[0]["gbps"] == pytest.approx(1000.0)
    assert rows[0]["fraction_of_copy"] == pytest.approx(0.25)
    table = dc.format_table(rows)
    assert "65536x4096" in table and "float16" in table and "dy.sum(axis=0)" in table
    path = dc.write_json({"facts": {"device": "synthetic"}, "results": rows}, tmp_path)
    assert json.loads(Path(path).read_text())["results"][1]["shape"] == [32, 1024]
