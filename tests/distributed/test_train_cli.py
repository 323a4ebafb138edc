"""``gpudense train --distributed``: the option, rank 0's output and files, the launcher check.

Real ranks under mpiexec are in test_mpiexec.py; here one process plays a
rank through an in-process communicator.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpudense.cli._distributed import split_note, start_distributed
from gpudense.cli.train import parse_args, train
from gpudense.distributed import LocalCommunicator

SMALL = ["--backend", "numpy", "--quiet", "--dataset", "synthetic", "--samples", "600", "--features", "8",
         "--classes", "3", "--epochs", "2"]


def load_fakes():
    spec = importlib.util.spec_from_file_location("fakes", Path(__file__).with_name("fakes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(argv, comm=None):
    out = io.StringIO()
    result = train(parse_args(argv), out=out, comm=comm)
    return result, out.getvalue().splitlines()


def _without_times(lines):
    return [re.sub(r"\s+[\d.]+ s\s+\(.*\)$", "", line) for line in lines]


def test_the_option_and_its_default():
    assert parse_args([]).distributed == "auto"
    assert parse_args(["--distributed", "nccl"]).distributed == "nccl"
    with pytest.raises(SystemExit):
        parse_args(["--distributed", "gloo"])


def test_a_world_of_one_prints_what_one_process_prints_and_says_so():
    alone, plain = _run(SMALL)
    local, lines = _run(SMALL, comm=LocalCommunicator())
    note = [line for line in lines if line.startswith("distributed:")]
    assert note == ["distributed: local, 1 rank; its one rank takes the whole batch of 32"]
    assert _without_times([line for line in lines if line not in note]) == _without_times(plain)
    assert alone.history.loss == local.history.loss and alone.test_accuracy == local.test_accuracy


def test_only_rank_0_prints_and_writes(tmp_path):
    fakes = load_fakes()
    save, plot = tmp_path / "r1.npz", tmp_path / "r1.png"
    result, lines = _run([*SMALL, "--save", str(save), "--plot", str(plot)], comm=fakes.Mirror(size=2, rank=1))
    assert lines == [] and not save.exists() and not plot.exists()
    assert len(result.history.loss) == 2  # rank 1 trained and has the history too
    save0 = tmp_path / "r0.npz"
    _, lines0 = _run([*SMALL, "--save", str(save0)], comm=fakes.Mirror(size=2, rank=0))
    assert save0.exists() and sum(line.startswith("epoch") for line in lines0) == 2
    assert "distributed: mirror, 2 ranks; the batch of 32 is split across them, 16 rows per rank" in lines0


def test_thesplit_note():
    assert split_note(32, 2) == "the batch of 32 is split across them, 16 rows per rank"
    assert split_note(32, 3) == "the batch of 32 is split across them, 11 or 10 rows per rank (lower ranks more)"
    assert split_note(2, 4) == "the batch of 2 is split across them, 1 or 0 rows per rank (lower ranks more)"
    assert split_note(32, 1) == "its one rank takes the whole batch of 32"


def test_auto_without_a_launcher_trains_alone(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    assert start_distributed(parse_args(["--distributed", "auto"])) is None
    monkeypatch.setenv("PMI_SIZE", "1")
    assert start_distributed(parse_args(["--distributed", "auto"])) is None
    monkeypatch.setenv("PMI_SIZE", "4")
    assert start_distributed(parse_args(["--distributed", "off"])) is None


def test_a_launcher_whose_processes_mpi_does_not_see_is_an_error():
    pytest.importorskip("mpi4py", reason="needs mpi4py: pip install 'gpudense[distributed]'")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMI_")}
    env["PMI_SIZE"] = "2"  # as if a launcher had started two processes; MPI starts a world of one
    done = subprocess.run([sys.executable, "-m", "gpudense", "train", *SMALL], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "gpudense train: error: the launcher started 2 processes but MPI sees 1")
    assert "epoch" not in done.stdout
