"""bench/gpu_validation.sh without a GPU: its dry run, its stop at the smoke test, a run with stubbed stages.

The stub stands in for every stage's command (GPU_VALIDATION_STUB, for the
tests only): it writes the stage's file, and one stage outlasts a shortened
limit, so the run shows how the script orders, limits, records and counts
what it writes. The scripts the stages call are checked to import and parse
their options here (``--help``), and their docstring examples run.
"""

from __future__ import annotations

import doctest
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_validation.sh"
STAGES = {"check": ["facts", "smoke", "kernels", "tests", "bias", "train"],
          "bench": ["facts", "wheels", "smoke", "bias", "fused", "layers", "train", "report"]}
#: What the device lease brings back: at most 8 files, names in letters, digits, '.', '_' and '-'.
MAX_FILES = 8
NAME = re.compile(r"^[A-Za-z0-9._-]+$")

STUB = """\
import pathlib, sys, time
stage, path = sys.argv[1], sys.argv[2]
if stage == "bias":
    time.sleep(30)  # outlasts its shortened limit: the script stops it and goes on
if path != "-":
    pathlib.Path(path).write_text(stage + "\\n")
print("stub ran", stage)
"""


def run_script(*args, env=None, timeout=120):
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)


@pytest.mark.parametrize("step", ["check", "bench"])
def test_the_dry_run_lists_the_stages_in_order_within_510_seconds(step, tmp_path):
    done = run_script(step, "--dry-run", env={"OUT": str(tmp_path / "out")})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [ln.split() for ln in lines[1:-1]]
    assert [r[0] for r in rows] == STAGES[step]
    kill_after = int(re.search(r"plus (\d+) s from SIGINT", lines[-1]).group(1))
    total = sum(int(r[1]) + kill_after for r in rows)
    assert lines[-1].startswith(f"total {total} s of at most 510 s") and total <= 510
    files = [r[2] for r in rows if r[2] != "-"]
    assert len(files) + 2 <= MAX_FILES and all(NAME.match(f) for f in files)  # + stages.json and the log
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_the_dry_run_fails_when_the_limits_pass_510_seconds():
    done = run_script("check", "--dry-run", env={"GPU_VALIDATION_LIMIT_tests": "400"})
    assert done.returncode == 1 and "of at most 510 s" in done.stdout.splitlines()[-1]


@pytest.mark.parametrize("args", [[], ["train"], ["check", "--now"], ["check", "--dry-run", "x"]])
def test_a_wrong_call_says_how_to_call_it(args):
    done = run_script(*args)
    assert done.returncode == 2 and "usage: bash bench/gpu_validation.sh check|bench [--dry-run]" in done.stderr


def test_without_a_usable_gpu_the_check_stops_at_the_smoke_test_with_one_line(tmp_path):
    out = tmp_path / "out"
    done = run_script("check", env={"OUT": str(out), "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 3
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("gpu_validation.sh check: stopped at the compile smoke test, nothing else ran: "
                                  "compile smoke test failed: ")
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert list(stages) == ["facts", "smoke"] and stages["facts"]["exit_status"] == 0
    assert stages["smoke"]["exit_status"] == 1
    facts = json.loads((out / "environment.json").read_text())
    assert facts["packages"]["numpy"] and "commit" in facts
    assert sorted(p.name for p in out.iterdir()) == ["check.log", "environment.json", "stages.json"]


@pytest.mark.parametrize("step", ["check", "bench"])
def test_a_stubbed_run_orders_limits_and_records_its_stages(step, tmp_path):
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    stub.chmod(0o755)
    wrapper = tmp_path / "stub"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {stub} \"$@\"\n")
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    no_wheels = tmp_path / "no-wheels"
    no_wheels.mkdir()
    done = run_script(step, env={"OUT": str(out), "GPU_VALIDATION_STUB": str(wrapper),
                                 "GPU_VALIDATION_LIMIT_bias": "1", "GPU_VALIDATION_WHEELS": str(no_wheels)})
    assert done.returncode == 1, done.stdout + done.stderr  # the bias stage was stopped
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert list(stages) == STAGES[step]
    assert stages["bias"]["exit_status"] == 124 and "== bias: stopped at its 1 s limit" in done.stdout
    assert all(s["exit_status"] == 0 for name, s in stages.items() if name != "bias")
    assert [ln.split(":")[0] for ln in done.stdout.splitlines() if ln.startswith("== ") and "(at most" in ln] == [
        f"== {name}" for name in STAGES[step]]
    names = sorted(p.name for p in out.iterdir())
    assert len(names) <= MAX_FILES and all(NAME.match(n) and (out / n).is_file() for n in names)
    assert f"{step}.log" in names and "stub ran train" in (out / f"{step}.log").read_text()
    assert "device_check.json" not in names  # the stopped stage wrote nothing
    if step == "bench":  # without the wheels that stage says so, and the rest runs
        assert (f"no nvmath-python wheel in {no_wheels} (bash bench/fetch_wheels.sh fetches it): the cuBLASLt "
                "epilogue rows will say nvmath-python is not importable") in done.stdout


def _scripts_called():
    text = SCRIPT.read_text()
    return sorted(set(re.findall(r"bench/(\w+\.py)", text)))


def test_every_python_script_the_run_calls_imports_and_parses_its_options():
    scripts = _scripts_called()
    assert {"gpu_facts.py", "compile_smoke.py", "kernel_report.py", "device_check.py", "fused_check.py",
            "train_bench.py", "gpu_report.py"} <= set(scripts)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in scripts:
        done = subprocess.run([sys.executable, str(REPO / "bench" / name), "--help"], capture_output=True,
                              text=True, cwd=REPO, env=env)
        assert done.returncode == 0 and done.stdout.startswith("usage:"), (name, done.stderr)
    done = subprocess.run([sys.executable, "-m", "gpudense", "bench", "--help"], capture_output=True, text=True,
                          cwd=REPO, env=env)
    for option in ("--backend", "--quick", "--seed", "--no-progress", "--dtypes", "--json"):
        assert option in done.stdout  # the options the layers stage gives it


@pytest.mark.parametrize("module", ["compile_smoke", "device_check", "fused_check", "gpu_facts", "gpu_report",
                                    "kernel_report", "readme_perf"])
def test_the_bench_modules_examples_hold(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and (result.attempted > 0 or module == "fused_check")  # its examples need a GPU


@pytest.mark.parametrize("step, doc", [("check", "docs/testing.md"), ("bench", "docs/benchmarking.md")])
def test_the_docs_give_the_stages_and_limits_the_script_has(step, doc):
    done = run_script(step, "--dry-run")
    script = [(r.split()[0], int(r.split()[1])) for r in done.stdout.splitlines()[1:-1]]
    text = (REPO / doc).read_text(encoding="utf-8")
    documented = re.findall(r"^\| (\w+) \| (\d+) s \|", text, flags=re.M)
    assert [(name, int(limit)) for name, limit in documented] == script


def _wheel(folder, version="0.0.1"):
    """A pure-Python wheel of a package named ``nvmath`` with ``nvmath.linalg.advanced`` (for the wheels stage)."""
    import zipfile

    info = f"nvmath_python-{version}.dist-info"
    files = {"nvmath/__init__.py": f"__version__ = {version!r}\n", "nvmath/linalg/__init__.py": "",
             "nvmath/linalg/advanced.py": "MatmulEpilog = None\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: nvmath-python\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    path = folder / f"nvmath_python-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_the_wheels_stage_installs_nvmath_for_the_stages_after_it(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    stub = tmp_path / "stub"
    stub.write_text(f"#!/bin/sh\n[ \"$1\" = fused ] && {sys.executable} -c 'import nvmath; print(\"stage sees nvmath\", "
                    "nvmath.__version__)'\nexit 0\n")
    stub.chmod(0o755)
    out = tmp_path / "out"
    done = run_script("bench", env={"OUT": str(out), "GPU_VALIDATION_STUB": str(stub),
                                    "GPU_VALIDATION_WHEELS": str(wheels)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"nvmath-python 0.0.1 imports (from {wheels})" in done.stdout
    assert "stage sees nvmath 0.0.1" in done.stdout
    assert json.loads((out / "stages.json").read_text())["stages"]["wheels"]["exit_status"] == 0
