"""Streamed batches equal sliced ones: the same training, bit for bit, whichever way the data arrive.

On NumPy, :class:`~gpudense.datasets.Rows` (features memory-mapped from a
file) always stream through ``Backend.stream_batches``' two staging buffers;
in-memory arrays are sliced. On CuPy, ``to_device`` copies data that fit
once; data left on the host stream through pinned buffers on a second
stream. Equal batches in equal order give equal training.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import get_backend
from gpudense.data import Dataset, make_synthetic
from gpudense.datasets import Rows, load_dataset
from gpudense.nn import MLP
from gpudense.optim import Adam
from gpudense.training import TrainConfig, evaluate, fit, to_device


def _train(data, backend="numpy", epochs=3, batch_size=50):
    model = MLP([data.n_features, 16, data.n_classes], backend=backend, rng=0)
    history = fit(model, Adam(model, lr=0.01), data, TrainConfig(epochs=epochs, batch_size=batch_size, rng=1))
    return model, history


def _as_rows(ds: Dataset) -> Dataset:
    return Dataset(ds.name, Rows(ds.x_train), ds.y_train, Rows(ds.x_test), ds.y_test, ds.n_classes)


def test_batches_cover_the_order_exactly():
    be = get_backend("numpy")
    x = np.arange(14.0).reshape(7, 2)
    y = np.arange(7)
    order = np.array([6, 2, 0, 5, 1, 3, 4])
    for data in (x, Rows(x)):
        got = [(xb.copy(), yb.copy()) for xb, yb in be.batches(data, y, order, 3)]
        assert [yb.tolist() for _, yb in got] == [[6, 2, 0], [5, 1, 3], [4]]
        for xb, yb in got:
            np.testing.assert_array_equal(xb, x[yb])
    assert [yb.tolist() for _, yb in be.batches(Rows(x), y, None, 4)] == [[0, 1, 2, 3], [4, 5, 6]]
    assert [yb for _, yb in be.batches(Rows(x), None, None, 5)] == [None, None]
    assert list(be.batches(Rows(x[:0]), y[:0], None, 5)) == []


def test_a_streamed_batch_stays_valid_while_the_next_is_gathered():
    be = get_backend("numpy")
    x = np.arange(12.0).reshape(6, 2)
    stream = be.batches(Rows(x), np.arange(6), None, 2)
    first, _ = next(stream)
    kept = first.copy()
    next(stream)  # gathers the third batch into the other buffer, not the first's
    np.testing.assert_array_equal(first, kept)


def test_streaming_forced_trains_exactly_as_in_memory():
    ds = make_synthetic(700, 12, 4, seed=5)
    model_a, hist_a = _train(ds)
    model_b, hist_b = _train(_as_rows(ds))
    assert hist_a.loss == hist_b.loss and hist_a.test_acc == hist_b.test_acc
    for name, a in model_a.state_dict().items():
        np.testing.assert_array_equal(model_b.state_dict()[name], a)


def test_memory_mapped_file_trains_exactly_as_the_npz(tmp_path):
    ds = make_synthetic(600, 10, 3, seed=2)
    x = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    y = np.concatenate([ds.y_train, ds.y_test])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    mapped = load_dataset(tmp_path, dtype="float32", seed=4)
    memory = load_dataset(tmp_path / "d.npz", dtype="float32", seed=4)
    assert isinstance(mapped.x_train, Rows) and isinstance(memory.x_train, np.ndarray)
    model_a, hist_a = _train(memory, batch_size=64)
    model_b, hist_b = _train(mapped, batch_size=64)
    assert hist_a.loss == hist_b.loss
    for name, a in model_a.state_dict().items():
        np.testing.assert_array_equal(model_b.state_dict()[name], a)
    assert evaluate(model_b, mapped.x_test, mapped.y_test, batch_size=7) == hist_b.test_acc[-1]


def test_to_device_leaves_rows_on_numpy():
    ds = _as_rows(make_synthetic(100, 4, 2))
    assert to_device(ds, get_backend("numpy")).x_train is ds.x_train


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_resident_and_streamed_train_alike(dtype):
    cp = get_backend("cupy").xp
    ds = make_synthetic(2000, 24, 5, seed=7, dtype=dtype)
    resident = to_device(ds, get_backend("cupy"))
    assert isinstance(resident.x_train, cp.ndarray)
    model_a, hist_a = _train(resident, backend="cupy", batch_size=128)
    model_b, hist_b = _train(ds, backend="cupy", batch_size=128)  # host arrays: streamed
    model_c, hist_c = _train(_as_rows(ds), backend="cupy", batch_size=128)  # Rows: streamed
    assert hist_a.loss == hist_b.loss == hist_c.loss
    for name, a in model_a.state_dict().items():
        np.testing.assert_array_equal(model_b.state_dict()[name], a)
        np.testing.assert_array_equal(model_c.state_dict()[name], a)


@pytest.mark.gpu
def test_cupy_rows_are_copied_to_the_device_in_chunks(monkeypatch):
    import gpudense.datasets as datasets

    be = get_backend("cupy")
    monkeypatch.setattr(datasets, "CHUNK_BYTES", 1000)
    x = np.random.default_rng(0).normal(size=(300, 7))
    on_device = Rows(x, index=np.arange(299, -1, -1), dtype="float32").to(be)
    np.testing.assert_array_equal(be.to_numpy(on_device), x[::-1].astype(np.float32))


@pytest.mark.gpu
def test_cupy_streamed_batches_match_host_rows():
    be = get_backend("cupy")
    x = np.random.default_rng(1).normal(size=(1000, 33)).astype(np.float32)
    y = np.arange(1000) % 3
    order = np.random.default_rng(2).permutation(1000)
    seen = []
    for xb, yb in be.batches(x, y, order, 96):
        seen.append((be.to_numpy(xb), be.to_numpy(yb)))  # used before the next but one is asked for
    got_x = np.concatenate([s[0] for s in seen])
    np.testing.assert_array_equal(got_x, x[order])
    np.testing.assert_array_equal(np.concatenate([s[1] for s in seen]), y[order])
