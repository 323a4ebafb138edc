"""The datasets: scikit-learn's digits, split and standardized; the synthetic set, deterministic and chunked."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense.data import load_digits, make_synthetic, stratified_split


def test_stratified_split_keeps_class_proportions():
    y = np.repeat(np.arange(3), [50, 30, 20])
    train, test = stratified_split(y, test_fraction=0.2, rng=0)
    assert np.bincount(y[test]).tolist() == [10, 6, 4]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    again = stratified_split(y, test_fraction=0.2, rng=0)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(y, test_fraction=0.2, rng=1)[1], test)
    with pytest.raises(ValueError):
        stratified_split(y, test_fraction=1.0, rng=0)


@pytest.mark.digits
def test_digits_are_split_and_standardized():
    ds = load_digits(seed=0)
    assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # about 20% of each class (~180 per class)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    raw = load_digits(seed=0, standardize=False)
    assert raw.x_train.min() == 0 and raw.x_train.max() == 1


def test_synthetic_set_is_deterministic_and_chunked():
    a = make_synthetic(1000, 7, 3, seed=5, chunk_size=128)
    b = make_synthetic(1000, 7, 3, seed=5, chunk_size=128)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.shape == (800, 7) and a.x_test.shape == (200, 7)
    assert set(np.unique(a.y_train)) == {0, 1, 2}
    c = make_synthetic(1000, 7, 3, seed=6, chunk_size=128)
    assert not np.array_equal(a.x_train, c.x_train)
    half = make_synthetic(1000, 7, 3, seed=5, chunk_size=128, dtype="float16")
    np.testing.assert_array_equal(half.x_train, a.x_train.astype(np.float16))
    with pytest.raises(ValueError, match="n_classes"):
        make_synthetic(100, 3, 1)


def test_digits_read_from_the_bundled_file_equal_sklearns_loader():
    sk_datasets = pytest.importorskip("sklearn.datasets", reason="the digits set comes with scikit-learn")
    from gpudense.data import digits_arrays

    pixels, labels = digits_arrays()
    bunch = sk_datasets.load_digits()
    assert pixels.dtype == np.float64 and labels.dtype == np.int64
    np.testing.assert_array_equal(pixels, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)


@pytest.mark.digits
def test_digits_are_read_without_importing_sklearn_datasets():
    import subprocess
    import sys

    code = ("import sys; from gpudense.data import load_digits; load_digits(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
