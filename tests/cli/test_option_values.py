"""``gpudense train``'s file options refuse what would silently lose data: an empty value, a folder, a plot over
the checkpoint, a --save over a file that is no checkpoint; a --plot is written whole or not at all."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from gpudense import plotting
from gpudense.checkpoint import load_checkpoint, save_checkpoint
from gpudense.cli import train as train_command
from gpudense.nn import MLP

from cli_run import run_cli

FAST = ["train", "--backend", "numpy", "--quiet", "--epochs", "1", "--hidden", "8"]


@pytest.fixture
def no_data(monkeypatch):
    def refuse(args):
        raise AssertionError("the data were loaded before every option was checked")

    monkeypatch.setattr(train_command, "_load_data", refuse)


def _error(status, out, err):
    assert status in (1, 2), err
    assert out == "" and err.strip().splitlines()[-1].startswith("gpudense train: error: "), err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("option", ["--save", "--resume", "--plot", "--hidden"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_value_is_refused_naming_the_option(option, value, capsys, no_data):
    line = _error(*run_cli([*FAST, option, value], capsys))
    assert f"argument {option}: expected" in line and "unset shell variable?" in line


def test_hidden_none_is_still_a_linear_model():
    assert train_command.parse_args(["--hidden", "none"]).hidden == ()


def test_plot_onto_the_save_path_is_refused_before_the_data(tmp_path, capsys, no_data):
    path = tmp_path / "run.png"
    line = _error(*run_cli([*FAST, "--save", str(path), "--plot", str(path)], capsys))
    assert f"--plot {path} is the file --save {path} names; give --plot another path" in line
    assert not path.exists()


def test_plot_onto_the_resumed_checkpoint_through_a_link_is_refused(tmp_path, capsys, no_data):
    ck = tmp_path / "ck.png"
    save_checkpoint(ck, MLP([64, 8, 10], backend="numpy", rng=0), epoch=0)
    (tmp_path / "link.png").symlink_to(ck)
    line = _error(*run_cli([*FAST, "--resume", str(ck), "--plot", str(tmp_path / "link.png")], capsys))
    assert "is the file --resume" in line
    assert load_checkpoint(ck).epoch == 0


@pytest.mark.parametrize("make", [True, False])
def test_save_to_a_path_ending_in_a_separator_is_refused(make, tmp_path, capsys, no_data):
    folder = tmp_path / "out"
    if make:
        folder.mkdir()
    line = _error(*run_cli([*FAST, "--save", f"{folder}/"], capsys))
    assert f"--save: expected a file path; {folder}/ ends in a path separator" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if make else [])


def test_save_checkpoint_to_a_path_ending_in_a_separator_is_refused(tmp_path):
    from gpudense.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="ends in a path separator"):
        save_checkpoint(f"{tmp_path}/ck/", MLP([2, 2], backend="numpy", rng=0), epoch=0)
    assert not list(tmp_path.iterdir())


def test_save_over_a_file_that_is_no_checkpoint_is_refused_unless_told(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("results of last week\n")
    line = _error(*run_cli([*FAST, "--save", str(notes)], capsys))
    assert f"--save {notes}: the file there is not a gpudense checkpoint" in line and "--overwrite" in line
    assert notes.read_text() == "results of last week\n"
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    line = _error(*run_cli([*FAST, "--save", str(other)], capsys))
    assert "no 'meta' entry" in line
    status, out, err = run_cli([*FAST, "--save", str(notes), "--overwrite"], capsys)
    assert status == 0, err
    assert load_checkpoint(notes).epoch == 1


def test_save_over_a_checkpoint_or_an_empty_file_goes_ahead(tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    ck.write_bytes(b"")
    assert run_cli([*FAST, "--save", str(ck)], capsys)[0] == 0
    assert run_cli([*FAST, "--save", str(ck), "--epochs", "2", "--resume", str(ck)], capsys)[0] == 0
    assert load_checkpoint(ck).epoch == 2


def test_a_plot_that_fails_to_write_leaves_the_old_one_and_names_plot(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    path.write_bytes(b"old plot")

    def full_disk(self, fname, **kwargs):
        fname.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    status, out, err = run_cli([*FAST, "--plot", str(path)], capsys)
    assert status == 1
    assert err.count("\n") == 1
    assert f"gpudense train: error: --plot: cannot write plot {path}: No space left on device" in err
    assert path.read_bytes() == b"old plot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_plot_history_writes_atomically(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from gpudense.training import History

    path = tmp_path / "c.png"
    plotting.plot_history(History([1.0], [0.5], [0.5], [0.1]), str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="ends in a path separator"):
        plotting.plot_history(History([1.0], [0.5], [0.5], [0.1]), f"{tmp_path}/")


def test_resuming_on_other_data_is_refused_before_the_data_are_loaded(tmp_path, capsys, monkeypatch):
    ck = tmp_path / "ck.npz"
    assert run_cli([*FAST, "--dataset", "synthetic", "--samples", "200", "--features", "6", "--save", str(ck)],
                   capsys)[0] == 0

    def refuse(args):
        raise AssertionError("the data were loaded before the checkpoint's data were compared")

    monkeypatch.setattr(train_command, "_load_data", refuse)
    line = _error(*run_cli([*FAST, "--epochs", "2", "--dataset", "synthetic", "--samples", "300", "--features", "6",
                            "--resume", str(ck)], capsys))
    assert f"checkpoint {ck} was trained on" in line and "'samples': 200" in line and "'samples': 300" in line


def test_resuming_a_checkpoint_that_records_no_data_says_so(tmp_path, capsys):
    from gpudense.optim import Adam

    ck = tmp_path / "lib.npz"
    model = MLP([64, 8, 10], backend="numpy", rng=0)
    save_checkpoint(ck, model, Adam(model), epoch=0, rng=np.random.default_rng(0))
    status, out, err = run_cli([*FAST, "--resume", str(ck)], capsys)
    assert status == 0, err
    assert (f"note: checkpoint {ck} does not record the data it was trained on (it was not saved by gpudense "
            "train); resuming on digits as asked, unchecked\n") in out


@pytest.mark.parametrize("argv,name", [
    (["train", "--data", ""], "--data"),
    (["train", "--data", "d.npz", "--val-data", ""], "--val-data"),
    (["bench", "--smoke", "--json", ""], "--json"),
    (["bench", "--smoke", "--table", ""], "--table"),
    (["bench", "--smoke", "--plot", ""], "--plot"),
    (["evaluate", "", "--data", "d.npz"], "CHECKPOINT"),
    (["evaluate", "ck.npz", "--data", ""], "--data"),
    (["predict", "ck.npz", "--data", "d.npz", "--out", ""], "--out"),
    (["export", "ck.npz", ""], "MODEL.safetensors"),
    (["import", "", "ck.npz"], "MODEL.safetensors"),
])
def test_every_command_refuses_an_empty_path(argv, name, capsys):
    status, out, err = run_cli(argv, capsys)
    assert status == 2 and out == ""
    assert f"argument {name}: expected a path; got an empty value (an unset shell variable?)" in err


def test_bench_outputs_must_be_distinct_files(tmp_path, capsys):
    path = tmp_path / "out.json"
    status, out, err = run_cli(["bench", "--smoke", "--no-progress", "--json", str(path), "--table", str(path)],
                               capsys)
    assert status == 1 and out == ""
    assert f"--json {path} is the file --table {path} names; give --json another path" in err
    assert not path.exists()


def test_predict_refuses_to_write_over_its_own_data(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 64), np.float32))
    ck = tmp_path / "ck.npz"
    save_checkpoint(ck, MLP([64, 8, 10], backend="numpy", rng=0), epoch=0)
    status, out, err = run_cli(["predict", str(ck), "--data", str(x), "--out", str(x), "--backend", "numpy"], capsys)
    assert status == 1 and out == ""
    assert f"--out {x} is the file --data {x} names; give --out another path" in err
    np.testing.assert_array_equal(np.load(x), np.zeros((3, 64), np.float32))


def test_resuming_on_a_data_file_that_changed_since_is_refused(tmp_path, capsys):
    data, ck = tmp_path / "data.npz", tmp_path / "ck.npz"
    gen = np.random.default_rng(0)
    np.savez(data, x=gen.standard_normal((100, 5)).astype(np.float32), y=gen.integers(0, 3, 100))
    assert run_cli([*FAST, "--data", str(data), "--save", str(ck)], capsys)[0] == 0
    saved = load_checkpoint(ck).extra["data_shape"]
    assert saved["train"] + saved["test"] == 100 and saved["features"] == 5 and saved["classes"] == 3
    np.savez(data, x=gen.standard_normal((120, 5)).astype(np.float32), y=gen.integers(0, 3, 120))
    line = _error(*run_cli([*FAST, "--epochs", "2", "--data", str(data), "--resume", str(ck)], capsys))
    assert line.startswith(f"gpudense train: error: checkpoint {ck} was trained on data of {saved}; the data given "
                           "now are {'train': ")
