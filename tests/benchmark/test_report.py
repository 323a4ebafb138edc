"""The one table formatter, the sweep's table, the JSON layout and its check, the JSON writer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpudense.benchmark import report
from gpudense.benchmark.stats import summarize


def _valid_doc():
    row = {
        "shape": "s", "batch": 2, "n_in": 3, "n_out": 4, "dtype": "float32", "stage": "dx",
        "impl": "gpudense", "samples_s": [1e-3, 2e-3], "stats": summarize([1e-3, 2e-3]),
        "flops": 48, "bytes": 100, "tflops": 1.0, "gbps": 2.0, "frac_flops": 0.5,
        "frac_bw": None, "fraction": 0.5, "ratios": {},
    }
    env = {"numpy": "2", "cpu_model": "x", "threads": 2, "torch": "no", "blas": [],
           "env_vars": {}, "python": "3"}
    return {"schema": report.SCHEMA, "created_utc": "t", "command": [], "settings": {},
            "environment": env, "ceilings": {"copy": {"gbps": 1.0}, "matmul": {"float32": {"tflops": 1.0}}},
            "rows": [row], "notes": []}


def test_check_document_accepts_valid_and_names_what_is_wrong():
    report.check_document(_valid_doc())
    doc = _valid_doc()
    del doc["rows"][0]["stats"]
    with pytest.raises(ValueError, match=r"rows\[0\]: missing key 'stats'"):
        report.check_document(doc)
    doc = _valid_doc()
    doc["rows"][0]["batch"] = "2"
    with pytest.raises(ValueError, match=r"rows\[0\].batch"):
        report.check_document(doc)
    doc = _valid_doc()
    doc["rows"][0]["samples_s"] = [1.0]
    with pytest.raises(ValueError, match="samples"):
        report.check_document(doc)


def test_check_document_rejects_another_schema_and_a_missing_environment_key():
    doc = _valid_doc()
    doc["schema"] = "gpudense-bench/0"
    with pytest.raises(ValueError, match="doc.schema: expected 'gpudense-bench/1'"):
        report.check_document(doc)
    doc = _valid_doc()
    del doc["environment"]["blas"]
    with pytest.raises(ValueError, match="doc.environment: missing key 'blas'"):
        report.check_document(doc)


def test_format_percent_marks_fractions_above_the_ceiling():
    assert report.format_percent(0.5) == "50"
    assert report.format_percent(1.0) == "100"
    assert report.format_percent(1.02) == "102!"  # kept as measured, not capped
    assert report.format_percent(2.0) == "200!"
    assert report.format_percent(None) == "-" and report.format_percent(math.nan) == "-"


def _table_doc(frac_bw):
    doc = _valid_doc()
    doc["settings"] = {"mode": "quick", "backend": "numpy", "threads": 2}
    doc["ceilings"]["copy"].update(threads=2)
    doc["ceilings"]["matmul"]["float32"]["n"] = 64
    doc["rows"][0]["frac_bw"] = frac_bw
    return doc


def test_table_flags_a_fraction_above_one_and_explains_the_mark():
    text = report.format_table(_table_doc(1.02))
    row = [ln for ln in text.splitlines() if ln.startswith("| s |")][0]
    assert row.split("|")[10].strip() == "50" and row.split("|")[11].strip() == "102!"
    assert "! above 100%" in text
    assert "copy 1.0 GB/s (2 threads)" in text
    text = report.format_table(_table_doc(0.9))
    assert "! above 100%" not in text and "| 90 |" in text


def test_table_rows_and_notes():
    doc = _table_doc(0.9)
    doc["rows"][0]["ratios"] = {"db.sum": 0.5}
    doc["notes"] = ["something to know"]
    lines = report.format_table(doc).splitlines()
    head = lines.index("| shape | batch x in x out | dtype | stage | median ms | IQR ms | min ms "
                       "| TFLOP/s | GB/s | %FLOP | %BW | time ours/ref |")
    assert lines[head + 1] == "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    assert lines[head + 2] == "| s | 2x3x4 | float32 | dx | 1.500 | 0.500 | 1.000 | 1.000 | 2.0 | 50 | 90 | 0.50x db.sum |"
    assert lines[-1] == "note: something to know"


def test_markdown_table():
    assert report.markdown_table(["a", "b", "c"], [["1", "2", "3"], ["x", "", "z"]], "lrl") == [
        "| a | b | c |", "|---|---:|---|", "| 1 | 2 | 3 |", "| x |  | z |"]
    assert report.markdown_table(["a"], [], "r") == ["| a |", "|---:|"]
    with pytest.raises(ValueError, match="align"):
        report.markdown_table(["a", "b"], [], "l")
    with pytest.raises(ValueError, match="align"):
        report.markdown_table(["a"], [], "c")
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        report.markdown_table(["a", "b"], [["1"]], "ll")


def test_json_text_writes_nan_as_null_and_numpy_scalars_as_numbers():
    text = report.json_text({"a": math.nan, "b": [np.float32(0.5), np.int64(3)], "c": (1.0, math.nan)})
    assert json.loads(text) == {"a": None, "b": [0.5, 3], "c": [1.0, None]}
    assert "NaN" not in text and text.endswith("\n")


def test_write_json_checks_the_document_and_creates_folders(tmp_path):
    doc = _valid_doc()
    doc["rows"][0]["frac_bw"] = math.nan  # a rate with no ceiling: null in the file
    path = tmp_path / "new" / "out.json"
    report.write_json(doc, path)
    back = json.loads(path.read_text())
    report.check_document(back)
    assert back["rows"][0]["frac_bw"] is None
    del doc["rows"][0]["stats"]
    with pytest.raises(ValueError, match="missing key 'stats'"):
        report.write_json(doc, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
