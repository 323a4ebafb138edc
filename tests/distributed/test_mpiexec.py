"""The real thing: several ranks under the environment's own ``mpiexec`` (MPICH), each run with a time limit.

Equivalence: float64 training on N ranks with global batch B gives the
losses and weights of one process with batch B, up to the order of
additions; on this problem (3 epochs) they agree to about 5e-16 relative,
asserted to 1e-12. A rank that raises or is killed ends the whole job with a
non-zero status; ranks that disagree on the set-up each print one error line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import select
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpudense import cli
from gpudense.training import fit

from mpi_launch import WORKER, finish, launch

#: Relative tolerance of the float64 equivalence (observed: below 1e-15).
RTOL = 1e-12

TRAIN = [sys.executable, "-m", "gpudense", "train", "--backend", "numpy", "--quiet"]
SYNTHETIC = ["--dataset", "synthetic", "--samples", "1500", "--features", "16", "--classes", "4"]


def _worker():
    spec = importlib.util.spec_from_file_location("mpi_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_train_like_one_process_with_the_same_global_batch(mpirun, tmp_path, ranks):
    worker = _worker()
    done = mpirun(["-n", str(ranks), sys.executable, str(WORKER), "equivalence", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    for name in worker.OPTIMIZERS:
        model, optimizer, data, config = worker.problem(name)
        assert config.batch_size % ranks != 0  # the remainder rule is exercised
        assert data.x_train.shape[0] % config.batch_size < ranks  # and a rank with no rows
        history = fit(model, optimizer, data, config)  # one process: the reference
        got = np.load(tmp_path / f"{name}.npz")
        assert int(got["size"]) == ranks
        np.testing.assert_allclose(got["loss"], history.loss, rtol=RTOL, atol=0)
        assert list(got["train_acc"]) == history.train_acc
        assert list(got["test_acc"]) == history.test_acc
        for key, want in model.state_dict().items():
            err = np.max(np.abs(got[f"param/{key}"] - want))
            assert err <= RTOL * np.max(np.abs(want)), (name, key, err)


def test_a_rank_that_raises_ends_every_rank(mpirun, tmp_path):
    done = mpirun(["-n", "2", sys.executable, str(WORKER), "raise", str(tmp_path)], timeout=60)
    assert done.returncode != 0
    assert "mpi_worker: error on rank 1 of 2: injected failure; stopping all ranks" in done.stderr
    assert "finished" not in done.stdout


def test_a_killed_rank_ends_every_rank(mpirun, tmp_path):
    done = mpirun(["-n", "2", sys.executable, str(WORKER), "kill", str(tmp_path)], timeout=60)
    assert done.returncode != 0
    assert "finished" not in done.stdout


@pytest.mark.digits
def test_gpudense_train_on_two_ranks_prints_once_and_matches_one_process(mpirun, capsys):
    done = mpirun(["-n", "2", *TRAIN, "--epochs", "3"])
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no rank printed anything else (warnings included)
    lines = done.stdout.splitlines()
    for start, count in (("data:", 1), ("model:", 1), ("optimizer:", 1), ("distributed: MPI", 1),
                         ("epoch", 3), ("test accuracy:", 1)):
        assert sum(line.startswith(start) for line in lines) == count, (start, done.stdout)
    assert "2 ranks" in done.stdout and "16 rows per rank" in done.stdout

    assert cli.main(["train", "--backend", "numpy", "--quiet", "--epochs", "3"]) == 0  # one process
    alone = capsys.readouterr().out.splitlines()
    acc = [float(next(line for line in out if line.startswith("test accuracy:")).split()[-1])
           for out in (lines, alone)]
    assert acc[0] >= 0.95 and abs(acc[0] - acc[1]) <= 2 / 359, acc
    losses = [[float(re.search(r"loss (\S+)", line).group(1)) for line in out if line.startswith("epoch")]
              for out in (lines, alone)]
    np.testing.assert_allclose(losses[0], losses[1], atol=2e-4)


def _summary(lines: list[str]) -> list[str]:
    """The epoch lines without their times."""
    return [re.sub(r"\s+[\d.]+ s\s+\(.*\)$", "", line) for line in lines if line.startswith("epoch")]


def test_resume_restores_every_rank_from_rank_0s_checkpoint(mpirun, tmp_path):
    full = mpirun(["-n", "2", *TRAIN, *SYNTHETIC, "--epochs", "3", "--save", str(tmp_path / "full.npz")])
    assert full.returncode == 0, full.stderr
    part = mpirun(["-n", "2", *TRAIN, *SYNTHETIC, "--epochs", "2", "--save", str(tmp_path / "part.npz")])
    assert part.returncode == 0, part.stderr
    resumed = mpirun(["-n", "2", *TRAIN, *SYNTHETIC, "--epochs", "3", "--resume", str(tmp_path / "part.npz"),
                      "--save", str(tmp_path / "part.npz")])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert _summary(resumed.stdout.splitlines()) == _summary(full.stdout.splitlines())[2:]
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "part.npz")
    for key in a.files:
        if key.startswith(("param/", "optim/")):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_ranks_with_different_options_each_print_one_error(mpirun):
    common = [*TRAIN, *SYNTHETIC, "--epochs", "1"]
    done = mpirun(["-n", "1", *common, "--lr", "0.001", ":", "-n", "1", *common, "--lr", "0.002"])
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("gpudense train: error:")]
    assert len(errors) == 2, done.stderr
    assert all("optimizer.hyperparams.lr is 0.001 on rank 0 but 0.002 on rank 1" in e for e in errors)
    assert "epoch" not in done.stdout


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rank_pid(root: int, rank: int) -> int | None:
    for pid in _descendants(root):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env:
            return pid
    return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the rank's process through /proc (Linux)")
def test_killing_a_rank_of_gpudense_train_ends_the_run(mpirun):
    proc = launch(["-n", "2", *TRAIN, *SYNTHETIC, "--epochs", "100000"], timeout=60)
    deadline = time.monotonic() + 60
    first = ""
    while not first.startswith("epoch") and time.monotonic() < deadline:  # wait for training to run
        if select.select([proc.stdout], [], [], 1.0)[0]:
            first = proc.stdout.readline()
            if not first:
                break
    if not first.startswith("epoch"):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"no epoch line came; stderr: {proc.stderr.read()[-2000:]}")
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    done = finish(proc, timeout=30)
    assert done.returncode != 0
    assert "test accuracy" not in done.stdout


def test_sigterm_to_the_launcher_says_where_the_last_complete_checkpoint_is(mpirun, tmp_path):
    """As one process does: the line names the checkpoint and its epoch; the job's status is 128 + SIGTERM."""
    from gpudense.checkpoint import load_checkpoint

    path = tmp_path / "ck.npz"
    proc = launch(["-n", "2", *TRAIN, *SYNTHETIC, "--epochs", "100000", "--save", str(path)], timeout=60)
    deadline = time.monotonic() + 60
    seen = 0
    while seen < 2 and time.monotonic() < deadline:  # two epoch lines: a checkpoint is complete
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line.startswith("epoch")
    if seen < 2:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"no epoch lines came; stderr: {proc.stderr.read()[-2000:]}")
    proc.send_signal(signal.SIGTERM)
    done = finish(proc, timeout=30)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    stopped = [line for line in done.stderr.splitlines() if "stopped by SIGTERM" in line]
    assert stopped, done.stderr
    epoch = load_checkpoint(path).epoch
    for line in stopped:
        assert re.fullmatch(rf"gpudense train: stopped by SIGTERM on rank [01] of 2; the last complete checkpoint "
                            rf"is {re.escape(str(path))} \(epoch {epoch}\); stopping all ranks", line), line
    assert not [p.name for p in tmp_path.iterdir() if p.name != "ck.npz"]  # no temporary left
