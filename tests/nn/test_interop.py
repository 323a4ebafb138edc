"""``Dense`` <-> ``torch.nn.Linear`` state, with plain arrays (PyTorch is not needed).

nn.Linear computes ``y = x @ weight.T + bias`` with ``weight`` of shape
(out_features, in_features); Dense computes ``y = x @ w + b`` with ``w`` of
shape (in_features, out_features). So ``weight = w.T``.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import Dense


def linear_like_torch(x, weight, bias):
    """nn.Linear's formula, per element in float64: y[k, j] = bias[j] + sum_i x[k, i] weight[j, i]."""
    batch, n_in = x.shape
    n_out = weight.shape[0]
    y = np.zeros((batch, n_out))
    for k in range(batch):
        for j in range(n_out):
            y[k, j] = (0.0 if bias is None else bias[j]) + sum(x[k, i] * weight[j, i] for i in range(n_in))
    return y


def test_export_is_the_transpose(rng):
    layer = Dense(5, 3, dtype="float64", backend="numpy", rng=0)
    state = layer.torch_state()
    assert set(state) == {"weight", "bias"}
    assert state["weight"].shape == (3, 5) and state["weight"].flags.c_contiguous
    np.testing.assert_array_equal(state["weight"], layer.w.T)
    np.testing.assert_array_equal(state["bias"], layer.b)
    state["weight"][0, 0] = 42.0  # a copy: the layer is untouched
    assert layer.w[0, 0] != 42.0
    x = rng.standard_normal((4, 5))
    st = layer.torch_state()
    np.testing.assert_allclose(layer(x), linear_like_torch(x, st["weight"], st["bias"]), rtol=1e-13, atol=1e-14)


def test_import_from_a_linear_state(rng):
    weight = rng.standard_normal((3, 5))  # (out, in), as nn.Linear(5, 3).weight
    bias = rng.standard_normal(3)
    layer = Dense.from_torch_state({"weight": weight, "bias": bias}, dtype="float64", backend="numpy")
    assert (layer.in_features, layer.out_features, layer.bias) == (5, 3, True)
    x = rng.standard_normal((2, 5))
    np.testing.assert_allclose(layer(x), linear_like_torch(x, weight, bias), rtol=1e-13, atol=1e-14)


def test_round_trip_both_ways(rng):
    a = Dense(6, 4, backend="numpy", rng=1)
    b = Dense(6, 4, backend="numpy", rng=2).load_torch_state(a.torch_state())
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.b, b.b)
    no_bias = Dense(6, 4, bias=False, backend="numpy", rng=3)
    state = no_bias.torch_state()
    assert set(state) == {"weight"}
    np.testing.assert_array_equal(Dense.from_torch_state(state, backend="numpy").w, no_bias.w)


def test_load_keeps_arrays_and_casts_floats():
    layer = Dense(2, 3, backend="numpy", rng=0)
    w_before = layer.w
    layer.load_torch_state({"weight": np.arange(6.0).reshape(3, 2), "bias": np.ones(3)})  # float64 in
    assert layer.w is w_before and layer.w.dtype == np.float32  # copied into the same array
    assert layer.w.tolist() == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    assert layer.dw is None


@pytest.mark.parametrize(
    "state,exc,match",
    [
        ({"weight": np.zeros((3, 2))}, ValueError, r"keys \['bias', 'weight'\]"),
        ({"weight": np.zeros((3, 2)), "bias": np.zeros(3), "extra": 1}, ValueError, "keys"),
        ({"weight": np.zeros((2, 3)), "bias": np.zeros(3)}, ValueError, r"weight must have shape \(3, 2\)"),
        ({"weight": np.zeros((3, 2)), "bias": np.zeros(2)}, ValueError, r"bias must have shape \(3,\)"),
        ({"weight": np.zeros((3, 2), np.int64), "bias": np.zeros(3)}, TypeError, "floating"),
        ([("weight", 1)], TypeError, "mapping"),
    ],
)
def test_load_errors(state, exc, match):
    layer = Dense(2, 3, backend="numpy", rng=0)
    before = layer.w.copy()
    with pytest.raises(exc, match=match):
        layer.load_torch_state(state)
    np.testing.assert_array_equal(layer.w, before)


def test_from_torch_state_errors():
    with pytest.raises(ValueError, match="'weight'"):
        Dense.from_torch_state({"bias": np.zeros(3)})
    with pytest.raises(ValueError, match="2-D"):
        Dense.from_torch_state({"weight": np.zeros(3)})


def test_backward_after_load_torch_state_says_no_forward_ran():
    layer = Dense(3, 2, backend="numpy", rng=0)
    x = np.ones((4, 3), np.float32)
    layer.backward(np.ones_like(layer(x)))
    layer.load_torch_state(layer.torch_state())
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((4, 2), np.float32))
