"""The NumPy backend's bias gradient (a BLAS gemv) against a float64 sum."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense.backends.numpy_backend import NumpyBackend


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_bias_grad_gemv_matches_float64_sum(rng, dtype):
    be = NumpyBackend()
    dy = rng.standard_normal((5000, 7)).astype(dtype)
    ref = dy.astype(np.float64).sum(axis=0)
    # float32: each partial sum is rounded once per row added: error <= n * eps * sum|dy|
    tol = (5000 * np.finfo(dtype).eps) * np.abs(dy).astype(np.float64).sum(axis=0)
    db = be.bias_grad(dy)
    assert db.dtype == dtype
    assert np.all(np.abs(db - ref) <= tol)
    out = np.full(7, 2.0, dtype)
    be.bias_grad(dy, out, accumulate=True)
    assert np.all(np.abs(out - (ref + 2.0)) <= tol + 4 * np.finfo(dtype).eps)
    # a shorter batch afterwards reuses the cached ones vector (a slice of it)
    np.testing.assert_allclose(be.bias_grad(dy[:3]), dy[:3].astype(np.float64).sum(0),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
