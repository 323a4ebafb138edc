"""The README's GPU rows are what bench/readme_perf.py writes from the committed results (bench/results/gpu-*/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import readme_perf

REPO = Path(__file__).resolve().parents[2]

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="2"
skipped="3" tests="20" time="9.0"></testsuite></testsuites>"""


def test_the_readme_holds_the_rows_the_script_writes():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_perf.block() in text
    done = subprocess.run([sys.executable, str(REPO / "bench" / "readme_perf.py"), "--check"], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_without_results_every_gpu_row_says_not_measured(tmp_path):
    got = readme_perf.rows(tmp_path / "results")
    assert len(got) == 11
    assert [r[1] for r in got] == ["not run"] + ["not measured"] * 10 and all(r[3] == "-" for r in got)


def test_rows_come_from_the_newest_folder_that_holds_each_file(tmp_path):
    results = tmp_path / "bench" / "results"
    old, new = results / "gpu-h200-2026-12-01", results / "gpu-h200-2026-12-05"
    old.mkdir(parents=True)
    new.mkdir()
    (old / "pytest-gpu.xml").write_text(JUNIT.replace('tests="20"', 'tests="10"'))
    (new / "pytest-gpu.xml").write_text(JUNIT)
    kernel = {"method": "gpudense kernel", "dtype": "float32", "shape": [65536, 4096], "bytes": 2 ** 30,
              "fraction_of_copy": 0.934, "gbps": 4012.4}
    small = {**kernel, "shape": [32, 1024], "bytes": 2 ** 17, "fraction_of_copy": 0.1, "gbps": 400.0}
    (old / "device_check.json").write_text(json.dumps({"results": [small, kernel]}))
    (new / "fused_check.json").write_text(json.dumps({"fused": [
        {"method": "unfused", "activation": "relu", "paired_ratio_vs_kernel": 1.31},
        {"method": "unfused", "activation": "relu", "paired_ratio_vs_kernel": 1.52}]}))
    step = {"stage": "step", "ratios": {"torch.step": 0.91}}
    (new / "layers.json").write_text(json.dumps({"runs": {"tf32": {"rows": [step, {**step, "stage": "dw"}]}}}))
    (old / "train_epoch.json").write_text(json.dumps({"ratio_gpudense_over_torch": 1.084}))
    got = {r[0]: r[1:] for r in readme_perf.rows(results)}
    assert got["GPU tests (all marked gpu)"] == [
        "14 passed, 2 failed, 1 errors, 3 skipped", "all pass", "bench/results/gpu-h200-2026-12-05/pytest-gpu.xml"]
    assert got["bias-gradient kernel, float32: fraction of copy bandwidth"][0] == "0.93 (4012 GB/s, dy 65536x4096)"
    assert got["bias-gradient kernel, bfloat16: fraction of copy bandwidth"][0] == "not measured"
    assert got["fused relu'+db pass: unfused time / fused time"][0] == "1.31-1.52x"
    assert got["fused gelu'+db pass: unfused time / fused time"][0] == "not measured"
    assert got["layer forward+backward, tf32: gpudense / torch.nn.Linear"][0] == "0.91x"
    assert got["training epoch 1,000,000 x 784: gpudense / PyTorch"] == [
        "1.08x", "<= 1.00", "bench/results/gpu-h200-2026-12-01/train_epoch.json"]
