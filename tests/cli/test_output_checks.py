"""Every output option of ``gpudense train`` and ``gpudense bench`` is checked before any work starts."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from gpudense.cli import bench as bench_cli
from gpudense.cli import train as train_command

from cli_run import run_cli

FAST = ["train", "--backend", "numpy", "--quiet", "--epochs", "1", "--hidden", "8"]
BENCH = ["bench", "--smoke", "--backend", "numpy", "--no-progress"]


@pytest.fixture
def no_data(monkeypatch):
    """Make loading the data fail loudly: a check that comes too late shows up as this error."""

    def refuse(args):
        raise AssertionError("the data were loaded before every option was checked")

    monkeypatch.setattr(train_command, "_load_data", refuse)


@pytest.fixture
def no_sweep(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the sweep started before every option was checked")

    monkeypatch.setattr(bench_cli, "sweep", refuse)


def _one_line_error(status, out, err, command):
    assert status == 1, err
    assert err.count("\n") == 1 and err.startswith(f"gpudense {command}: error: "), err
    assert out == "", out  # nothing ran: no data line, no epoch, no table


# -- train ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p.txt", "curves", "p.png.pdf"])
def test_train_plot_must_be_a_png_checked_before_the_data(name, tmp_path, capsys, no_data):
    status, out, err = run_cli([*FAST, "--plot", str(tmp_path / name)], capsys)
    _one_line_error(status, out, err, "train")
    assert f"--plot: expected a path ending in .png; got {str(tmp_path / name)!r}" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.digits
def test_train_plot_prints_the_path_it_wrote(tmp_path, capsys):
    path = tmp_path / "curves.PNG"
    status, out, err = run_cli([*FAST, "--plot", str(path)], capsys)
    assert status == 0, err
    assert f"plot: {path}\n" in out and path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.PNG"]


def test_train_save_to_a_fifo_is_refused_before_the_data(tmp_path, capsys, no_data):
    fifo = tmp_path / "ck.npz"
    os.mkfifo(fifo)
    status, out, err = run_cli([*FAST, "--save", str(fifo)], capsys)
    _one_line_error(status, out, err, "train")
    assert f"checkpoint target {fifo} is a FIFO (named pipe)" in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_train_save_to_a_character_device_is_refused_before_the_data(tmp_path, capsys, no_data):
    if os.geteuid() != 0:
        pytest.skip("making a character device needs root (os.mknod)")
    dev = tmp_path / "full"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # what /dev/full is, in tmp_path
    status, out, err = run_cli([*FAST, "--save", str(dev)], capsys)
    _one_line_error(status, out, err, "train")
    assert f"checkpoint target {dev} is a character device" in err
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


@pytest.mark.digits
def test_train_save_through_a_symlink_keeps_the_link(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "ck.npz"
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    status, out, err = run_cli([*FAST, "--save", str(link)], capsys)
    assert status == 0, err
    assert link.is_symlink() and real.is_file()


def _history_checkpoint(tmp_path, capsys, history):
    """A real checkpoint of one epoch, with its history replaced by ``history``."""
    good = tmp_path / "good.npz"
    assert run_cli([*FAST, "--save", str(good)], capsys)[0] == 0
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"][()]))
    meta["extra"]["history"] = history
    arrays["meta"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as f:
        np.savez(f, **arrays)
    return bad


@pytest.mark.digits
def test_train_resume_with_history_lists_of_different_lengths_fails_at_load(tmp_path, capsys, monkeypatch):
    bad = _history_checkpoint(tmp_path, capsys, {"loss": [1.0], "train_acc": [0.5, 0.6],
                                                 "test_acc": [0.5], "seconds": [1.0]})
    monkeypatch.setattr(train_command, "_load_data", lambda args: pytest.fail("data loaded"))
    status, out, err = run_cli([*FAST, "--epochs", "3", "--resume", str(bad)], capsys)
    _one_line_error(status, out, err, "train")
    assert f"checkpoint {bad}" in err and "one entry per epoch" in err
    assert "loss 1, train_acc 2, test_acc 1, seconds 1" in err


@pytest.mark.digits
def test_train_resume_with_a_history_missing_a_list_fails_at_load(tmp_path, capsys, monkeypatch):
    bad = _history_checkpoint(tmp_path, capsys, {"loss": [1.0], "train_acc": [0.5], "test_acc": [0.5]})
    monkeypatch.setattr(train_command, "_load_data", lambda args: pytest.fail("data loaded"))
    status, out, err = run_cli([*FAST, "--epochs", "3", "--resume", str(bad)], capsys)
    _one_line_error(status, out, err, "train")
    assert "extra 'history' needs the lists loss, train_acc, test_acc, seconds; got no seconds" in err


@pytest.mark.digits
def test_train_resume_with_a_history_longer_than_its_epochs_fails_at_load(tmp_path, capsys, monkeypatch):
    bad = _history_checkpoint(tmp_path, capsys, {"loss": [1.0, 0.5], "train_acc": [0.5, 0.6],
                                                 "test_acc": [0.5, 0.6], "seconds": [1.0, 1.0]})
    monkeypatch.setattr(train_command, "_load_data", lambda args: pytest.fail("data loaded"))
    status, out, err = run_cli([*FAST, "--epochs", "3", "--resume", str(bad)], capsys)
    _one_line_error(status, out, err, "train")
    assert "2 epochs of history" in err and "epoch 1" in err


# -- bench ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag,name", [("--json", "x.json"), ("--table", "x.md"), ("--plot", "x.png")])
def test_bench_refuses_a_missing_folder_as_train_does(flag, name, tmp_path, capsys, no_sweep):
    missing = tmp_path / "nonexist"
    status, out, err = run_cli([*BENCH, flag, str(missing / name)], capsys)
    _one_line_error(status, out, err, "bench")
    assert f"{flag} {missing / name}: directory {missing} does not exist" in err
    assert not missing.exists()


def test_train_and_bench_word_a_missing_folder_alike(tmp_path, capsys, no_data, no_sweep):
    missing = tmp_path / "nonexist"
    _, _, train_err = run_cli([*FAST, "--plot", str(missing / "p.png")], capsys)
    _, _, bench_err = run_cli([*BENCH, "--plot", str(missing / "p.png")], capsys)
    assert train_err.split(": error: ")[1] == bench_err.split(": error: ")[1]
    assert not missing.exists()


@pytest.mark.digits
def test_a_full_disk_under_save_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    from gpudense import checkpoint as ckpt_mod

    def full(f, **arrays):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_mod.np, "savez", full)
    target = tmp_path / "ck.npz"
    status, out, err = run_cli([*FAST, "--save", str(target)], capsys)
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"gpudense train: error: cannot write checkpoint {target}: No space left on device")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_bench_table_to_a_full_device_names_the_path(capsys):
    status, out, err = run_cli([*BENCH, "--no-torch", "--table", "/dev/full"], capsys)
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert status == 1 and len(errors) == 1, err
    assert err.endswith("gpudense bench: error: --table /dev/full: cannot write: No space left on device\n")
