"""``gpudense train --dtype bfloat16`` and ``gpudense bench --dtypes bfloat16`` on the CPU."""

from __future__ import annotations

import importlib.util
import json

import pytest

from gpudense import cli
from gpudense.benchmark import report

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ml_dtypes") is None,
                                reason="bfloat16 needs ml_dtypes (pip install 'gpudense[bf16]')")


@pytest.mark.digits
def test_train_in_bfloat16_reaches_the_accuracy_of_the_digits_run(capsys):
    """The default digits run in bfloat16: float32 master weights, products in float32; >= 0.95."""
    status = cli.main(["train", "--backend", "numpy", "--quiet", "--dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert status == 0
    assert "dtype=bfloat16" in out  # the model line names it
    lines = out.splitlines()
    assert len([line for line in lines if line.startswith("epoch")]) == 20
    assert float(lines[-1].split(":")[1]) >= 0.95


def test_bench_runs_bfloat16_on_the_cpu(tmp_path, monkeypatch, fresh_backends):
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    out = tmp_path / "out.json"
    rc = cli.main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--no-torch", "--threads", "1",
                   "--dtypes", "bfloat16", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    report.check_document(doc)
    assert {r["dtype"] for r in doc["rows"]} == {"bfloat16"}
    assert {"forward", "dx", "dw", "db", "step"} <= {r["stage"] for r in doc["rows"]}
    assert all(v > 0 for r in doc["rows"] for v in r["samples_s"])
    assert "bfloat16" in doc["ceilings"]["matmul"]
