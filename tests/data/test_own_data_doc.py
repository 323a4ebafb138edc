"""docs/own-data.md: every code block and command of the worked example runs, in order, and does what it says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "own-data.md"
BLOCK = re.compile(r"```(python|console)\n(.*?)```", re.S)


def _blocks():
    return [(kind, body) for kind, body in BLOCK.findall(DOC.read_text(encoding="utf-8"))]


def _run(cmd, cwd):
    env = dict(os.environ, GPUDENSE_BACKEND="numpy", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    return done.stdout


def _run_doc(tmp_path, *, with_torch):
    outputs = []
    ran = 0
    for kind, body in _blocks():
        if kind == "python":
            if "import torch" in body and not with_torch:
                continue
            outputs.append(_run([sys.executable, "-c", body], tmp_path))
            ran += 1
            continue
        for line in body.splitlines():
            if not line.startswith("$ "):
                continue
            words = shlex.split(line[2:])
            assert words[0] == "gpudense"
            outputs.append(_run([sys.executable, "-m", "gpudense", *words[1:]], tmp_path))
            ran += 1
    return ran, outputs


def test_doc_has_the_whole_example():
    kinds = [kind for kind, _ in _blocks()]
    assert kinds == ["python", "console", "python", "python"]
    commands = [line.split()[1:3] for kind, body in _blocks() if kind == "console"
                for line in body.splitlines() if line.startswith("$ ")]
    assert commands == [["gpudense", "train"], ["gpudense", "evaluate"], ["gpudense", "predict"],
                        ["gpudense", "export"]]


def test_every_command_runs(tmp_path):
    pytest.importorskip("safetensors", reason="gpudense export needs the safetensors package")
    ran, outputs = _run_doc(tmp_path, with_torch=False)
    assert ran == 6  # the arrays, four commands, the Python API
    train, evaluate, predict, export, api = outputs[1:]
    assert float(train.strip().splitlines()[-1].split()[-1]) >= 0.98
    assert "class     count   correct predicted  accuracy" in evaluate
    assert "predictions: preds.npy (1000 samples, class ids)" in predict
    assert (tmp_path / "model.safetensors").stat().st_size > 0
    assert float(api.split()[-1]) >= 0.98


def test_the_torch_block_agrees(tmp_path):
    pytest.importorskip("safetensors", reason="gpudense export needs the safetensors package")
    pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0; in no extra)")
    ran, outputs = _run_doc(tmp_path, with_torch=True)
    assert ran == 7
    assert float(outputs[5].split()[-1]) >= 0.98  # the block asserts the predictions equal gpudense's
