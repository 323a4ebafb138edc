"""Finite-difference check of the whole layer's gradients in float64."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import Dense
from reference import numeric_grad


@pytest.mark.parametrize("x_shape", [(5, 4), (2, 3, 4), (1, 4)])
def test_layer_gradients_match_finite_differences(rng, x_shape):
    layer = Dense(4, 3, dtype="float64", backend="numpy", rng=rng)
    x = rng.standard_normal(x_shape)
    c = rng.standard_normal(x_shape[:-1] + (3,))

    def loss():
        # A non-linear scalar loss: L = sum(c * tanh(y)), so dL/dy = c * (1 - tanh(y)^2).
        return float(np.sum(c * np.tanh(layer(x))))

    y = layer(x)
    dy = c * (1 - np.tanh(y) ** 2)
    dx = layer.backward(dy)

    # Central differences have O(h^2) truncation and O(eps/h) rounding error: ~1e-10 here.
    for analytic, numeric, name in [
        (dx, numeric_grad(loss, x), "dx"),
        (layer.dw, numeric_grad(loss, layer.w), "dw"),
        (layer.db, numeric_grad(loss, layer.b), "db"),
    ]:
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
