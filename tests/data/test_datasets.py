"""Own data files: the forms gpudense train --data takes, and one clear line for every bad file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cli_run import run_cli
from gpudense.data import Dataset
from gpudense.datasets import DataError, Rows, load_arrays, load_dataset


def _blobs(n=120, f=5, classes=3, seed=0):
    gen = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = gen.normal(size=(n, f)) + 3.0 * y[:, None]
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture
def good(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


def test_three_forms_give_the_same_arrays(good):
    folder, x, y = good
    for source in (folder / "d.npz", f"{folder / 'x.npy'},{folder / 'y.npy'}", folder):
        xs, ys = load_arrays(source)
        np.testing.assert_array_equal(np.asarray(xs), x)
        np.testing.assert_array_equal(ys, y)
        assert ys.dtype == np.int64


def test_npy_features_are_memory_mapped_and_stay_rows(good):
    folder, x, y = good
    xs, _ = load_arrays(folder)
    assert isinstance(xs, np.memmap) and xs.mode == "r"
    ds = load_dataset(folder, dtype="float64", seed=3)
    assert isinstance(ds, Dataset) and isinstance(ds.x_train, Rows)
    assert ds.x_train.dtype == np.float64
    # The stratified split of the in-memory form, rows for rows.
    mem = load_dataset(folder / "d.npz", dtype="float64", seed=3)
    np.testing.assert_array_equal(ds.x_train[:], mem.x_train)
    np.testing.assert_array_equal(ds.x_test[:], mem.x_test)
    np.testing.assert_array_equal(ds.y_test, mem.y_test)
    assert ds.n_classes == 3 and len(ds.y_test) == 24  # 20% of each class of 40


def test_val_data_is_the_test_set(good, tmp_path):
    folder, x, y = good
    np.savez(tmp_path / "v.npz", x=x[:10], y=y[:10])
    ds = load_dataset(folder / "d.npz", tmp_path / "v.npz")
    assert ds.x_train.shape == (120, 5) and ds.x_test.shape == (10, 5)


def _write_npy(path, a):
    np.save(path, a)
    return str(path)


BAD = [
    ("missing key", lambda d: (np.savez(d / "b.npz", x=np.ones((3, 2))), str(d / "b.npz"))[1],
     "expected arrays x and y; the archive holds x"),
    ("object array", lambda d: (np.save(d / "o.npy", np.array([1, "a"], dtype=object), allow_pickle=True),
                                f"{d / 'o.npy'},{d / 'y.npy'}")[1], "holds Python objects"),
    ("object in npz", lambda d: (np.savez(d / "o.npz", x=np.array([[1, None]], dtype=object), y=np.zeros(1, int)),
                                 str(d / "o.npz"))[1], "holds Python objects"),
    ("features 1-D", lambda d: f"{_write_npy(d / 'f.npy', np.ones(4))},{_write_npy(d / 'l.npy', np.zeros(4, int))}",
     "features must be 2-D"),
    ("labels 2-D", lambda d: f"{_write_npy(d / 'f.npy', np.ones((4, 2)))},{_write_npy(d / 'l.npy', np.zeros((4, 1), int))}",
     "labels must be 1-D"),
    ("length mismatch", lambda d: f"{_write_npy(d / 'f.npy', np.ones((4, 2)))},{_write_npy(d / 'l.npy', np.zeros(5, int))}",
     "features and labels differ in length: 4 samples of features, 5 labels"),
    ("float labels", lambda d: f"{_write_npy(d / 'f.npy', np.ones((4, 2)))},{_write_npy(d / 'l.npy', np.zeros(4))}",
     "labels must be integers"),
    ("negative label", lambda d: f"{_write_npy(d / 'f.npy', np.ones((4, 2)))},{_write_npy(d / 'l.npy', np.array([0, 1, -1, 0]))}",
     "labels must be class ids >= 0; got -1 (at sample 2)"),
    ("nan feature", lambda d: f"{_write_npy(d / 'f.npy', np.array([[1.0, 2.0], [np.nan, 0.0], [0, 0], [1, 1]]))},"
                              f"{_write_npy(d / 'l.npy', np.array([0, 1, 0, 1]))}",
     "features must be finite; sample 1 holds NaN or inf"),
    ("inf in npz", lambda d: (np.savez(d / "i.npz", x=np.array([[1.0], [np.inf]]), y=np.array([0, 1])),
                              str(d / "i.npz"))[1], "sample 1 holds NaN or inf"),
    ("overflows float32", lambda d: (np.savez(d / "i.npz", x=np.array([[1.0], [1e300]]), y=np.array([0, 1])),
                                     str(d / "i.npz"))[1], "sample 1 holds a value too large for float32"),
    ("empty npz file", lambda d: ((d / "e.npz").write_bytes(b""), str(d / "e.npz"))[1], "is empty (0 bytes)"),
    ("empty npy file", lambda d: ((d / "e.npy").write_bytes(b""), f"{d / 'e.npy'},{d / 'y.npy'}")[1],
     "is empty (0 bytes)"),
    ("no samples", lambda d: f"{_write_npy(d / 'f.npy', np.ones((0, 2)))},{_write_npy(d / 'l.npy', np.zeros(0, int))}",
     "features hold no data"),
    ("truncated npy", lambda d: ((d / "t.npy").write_bytes((d / "x.npy").read_bytes()[:300]),
                                 f"{d / 't.npy'},{d / 'y.npy'}")[1], "is truncated"),
    ("not a zip", lambda d: ((d / "n.npz").write_bytes(b"hello world"), str(d / "n.npz"))[1],
     "not a .npz file"),
    ("missing file", lambda d: str(d / "nope.npz"), "does not exist"),
    ("a FIFO", lambda d: (os.mkfifo(d / "f.npz"), str(d / "f.npz"))[1], "is not a regular file"),
    ("a directory in a pair", lambda d: f"{d},{d / 'y.npy'}", "is a directory"),
    ("one label class", lambda d: f"{_write_npy(d / 'f.npy', np.ones((4, 2)))},{_write_npy(d / 'l.npy', np.zeros(4, int))}",
     "one class only"),
    ("pair syntax", lambda d: f"{d / 'x.npy'},", "expected two .npy files as X.npy,Y.npy"),
    ("npy without labels", lambda d: str(d / "x.npy"), "expected labels too"),
]


@pytest.mark.parametrize("case, make, message", BAD, ids=[c[0] for c in BAD])
def test_bad_files_get_one_clear_line(good, case, make, message):
    folder = good[0]
    source = make(folder)
    with pytest.raises(DataError, match=None) as info:
        load_dataset(source)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case, make, message", BAD[:6], ids=[c[0] for c in BAD[:6]])
def test_bad_files_on_the_command_line(good, case, make, message, capsys):
    folder = good[0]
    source = make(folder)
    save = folder / "never.npz"
    status, out, err = run_cli(["train", "--data", source, "--backend", "numpy", "--epochs", "1",
                                "--save", str(save)], capsys)
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("gpudense train: error: ") and message in err
    assert "epoch" not in out and not save.exists()  # nothing half-done


def test_val_data_needs_data(good, capsys):
    status, _, err = run_cli(["train", "--val-data", str(good[0] / "d.npz"), "--backend", "numpy"], capsys)
    assert status == 1 and "--val-data needs --data" in err


def test_train_on_own_data_reaches_high_accuracy(good, capsys):
    folder = good[0]
    status, out, err = run_cli(["train", "--data", str(folder), "--backend", "numpy", "--epochs", "20",
                                "--lr", "0.02", "--hidden", "16", "--quiet"], capsys)
    assert status == 0, err
    assert f"data: {folder}, 96 train / 24 test samples, 5 features, 3 classes" in out
    assert float(out.strip().splitlines()[-1].split()[-1]) >= 0.9


def test_resume_refuses_other_data(good, tmp_path, capsys):
    folder = good[0]
    save = str(tmp_path / "c.npz")
    assert run_cli(["train", "--data", str(folder), "--backend", "numpy", "--epochs", "1", "--save", save,
                    "--quiet"], capsys)[0] == 0
    status, _, err = run_cli(["train", "--data", str(folder / "d.npz"), "--backend", "numpy", "--epochs", "2",
                              "--resume", save, "--quiet"], capsys)
    assert status == 1 and "was trained on" in err


def test_rows_read_only_what_is_asked():
    base = np.arange(20.0).reshape(10, 2)
    rows = Rows(base, index=np.array([9, 3, 5]), dtype="float32")
    assert rows.shape == (3, 2) and len(rows) == 3 and rows.nbytes == 24
    np.testing.assert_array_equal(rows[np.array([2, 0])], np.array([[10, 11], [18, 19]], np.float32))
    assert rows[1:].dtype == np.float32
    with pytest.raises(ValueError, match="2-D"):
        Rows(np.ones(3))


def test_empty_value_is_refused():
    with pytest.raises(DataError, match="got an empty value"):
        load_arrays("  ")
