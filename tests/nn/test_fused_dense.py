"""Dense(..., activation=...) and dense_act_forward / dense_act_backward against references.

The CPU reference is tests/reference.py's loops in float64 (``check_layer_act``,
whose bounds are stated there); every test that takes the ``xp`` fixture runs
on NumPy and, where a CUDA device is usable, on CuPy. The fused layer must
also equal the unfused one (Dense, then the activation block) built from the
same formulas, agree with central finite differences in float64, and match
PyTorch's ``Linear`` + activation where torch is installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from reference import numeric_grad
from gpudense import Dense, dense_act_backward, dense_act_forward, dense_backward, dense_forward
from gpudense.activations import GELU, ReLU, Tanh

ACTS = ["relu", "gelu", "tanh"]
BLOCKS = {"relu": ReLU, "gelu": GELU, "tanh": Tanh}
SHAPES = [((1, 5), 3), ((7, 4), 1), ((33, 17), 35), ((2, 3, 4), 5), ((130, 9), 67), ((0, 4), 3)]


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape_x, n_out", SHAPES)
def test_fused_layer_matches_the_loop_reference(xp, rng, activation, dtype, shape_x, n_out):
    x, w, b, dy = ref.random_inputs(rng, shape_x, n_out, dtype)
    ref.check_layer_act(*(xp.asarray(a) for a in (x, w, b, dy)), activation)


@pytest.mark.parametrize("activation", ACTS)
def test_fused_layer_without_bias_or_input_grad(xp, rng, activation):
    x, w, _, dy = ref.random_inputs(rng, (9, 6), 5, np.float64)
    ref.check_layer_act(xp.asarray(x), xp.asarray(w), None, xp.asarray(dy), activation, input_grad=False)


@pytest.mark.parametrize("activation", ACTS)
def test_fused_equals_dense_then_the_activation_block(xp, rng, activation):
    """Same formulas, so on float64 the fused and the unfused layer agree to the last few bits."""
    x, w, b, dy = (xp.asarray(a) for a in ref.random_inputs(rng, (20, 8), 6, np.float64))
    y, saved = dense_act_forward(x, w, b, activation=activation)
    block = BLOCKS[activation]()
    z = dense_forward(x, w, b)
    y_unfused = block(z)
    np.testing.assert_allclose(ref.host(y), ref.host(y_unfused), rtol=1e-15, atol=1e-15)
    g = dense_act_backward(dy, x, w, saved, activation=activation)
    dz = block.backward(dy)
    g_unfused = dense_backward(dz, x, w)
    for got, want in zip(g, g_unfused):
        np.testing.assert_allclose(ref.host(got), ref.host(want), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("activation", ACTS)
def test_fused_gradients_match_finite_differences(rng, activation):
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((5, 3))
    b = rng.standard_normal(3)
    dy = rng.standard_normal((4, 3))
    z = x @ w + b
    x[np.abs(z).min(axis=1) < 1e-3] += 0.01  # keep relu's kink off the difference stencil

    def loss():
        return float((dense_act_forward(x, w, b, activation=activation).y * dy).sum())

    fwd = dense_act_forward(x, w, b, activation=activation)
    g = dense_act_backward(dy, x, w, fwd.saved, activation=activation)
    for name, got, param in (("dx", g.dx, x), ("dw", g.dw, w), ("db", g.db, b)):
        want = numeric_grad(loss, param)
        assert np.abs(got - want).max() <= 1e-6 * max(1.0, np.abs(want).max()), name


def test_saved_is_the_output_for_relu_and_tanh_and_z_for_gelu(rng):
    x, w, b, _ = ref.random_inputs(rng, (6, 4), 3, np.float32)
    for activation in ("relu", "tanh"):
        y, saved = dense_act_forward(x, w, b, activation=activation)
        assert saved is y  # nothing kept beyond the output
    y, saved = dense_act_forward(x, w, b, activation="gelu")
    np.testing.assert_array_equal(saved, dense_forward(x, w, b))
    y, saved = dense_act_forward(x, w, b, activation=None)
    assert saved is None
    np.testing.assert_array_equal(y, dense_forward(x, w, b))


def test_dense_layer_with_activation_accumulates_and_repr(rng):
    layer = Dense(4, 3, activation="tanh", dtype="float64", backend="numpy", rng=0)
    assert layer.activation == "tanh"
    assert repr(layer) == ("Dense(in_features=4, out_features=3, activation='tanh', bias=True, "
                           "dtype=float64, backend='numpy')")
    x1, x2 = rng.standard_normal((5, 4)), rng.standard_normal((2, 4))
    d1, d2 = rng.standard_normal((5, 3)), rng.standard_normal((2, 3))
    w, b = layer.w.copy(), layer.b.copy()
    layer(x1)
    layer.backward(d1)
    layer(x2)
    layer.backward(d2, input_grad=False)
    dz1 = d1 * (1 - np.tanh(x1 @ w + b) ** 2)
    dz2 = d2 * (1 - np.tanh(x2 @ w + b) ** 2)
    np.testing.assert_allclose(layer.dw, x1.T @ dz1 + x2.T @ dz2, rtol=1e-12)
    np.testing.assert_allclose(layer.db, dz1.sum(0) + dz2.sum(0), rtol=1e-12)
    layer.zero_grad()
    assert layer.dw is None and layer.db is None


def test_dense_without_activation_is_unchanged(rng):
    layer = Dense(3, 2, backend="numpy", rng=0)
    assert layer.activation is None and "activation" not in repr(layer)


def test_bad_activation_and_saved_are_refused(rng):
    with pytest.raises(ValueError, match="unknown activation 'swish'; expected one of 'relu', 'gelu', 'tanh' or None"):
        Dense(3, 2, activation="swish", backend="numpy")
    x, w, b, dy = ref.random_inputs(rng, (4, 3), 2, np.float32)
    fwd = dense_act_forward(x, w, b, activation="gelu")
    with pytest.raises(ValueError, match="saved must be what dense_act_forward returned"):
        dense_act_backward(dy, x, w, fwd.saved[:2], activation="gelu")
    with pytest.raises(ValueError, match="unknown activation"):
        dense_act_forward(x, w, b, activation="sigmoid")


def test_from_torch_state_takes_an_activation():
    layer = Dense.from_torch_state({"weight": np.ones((2, 3)), "bias": np.zeros(2)}, activation="relu",
                                   backend="numpy")
    assert layer.activation == "relu"
    assert layer(np.array([[1.0, -2.0, 0.0]], np.float32)).tolist() == [[0.0, 0.0]]


# -- PyTorch ------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_pytorch_linear_and_activation(rng, activation, dtype):
    """Forward and all three gradients against torch.nn.Linear + ReLU / GELU(approximate="tanh") / Tanh."""
    torch = pytest.importorskip("torch", reason="torch is not installed (the comparison is optional)")
    layer = Dense(7, 5, activation=activation, dtype=dtype, backend="numpy", rng=1)
    linear = torch.nn.Linear(7, 5, dtype=getattr(torch, dtype))
    linear.load_state_dict({k: torch.from_numpy(v) for k, v in layer.torch_state().items()})
    act = {"relu": torch.nn.ReLU(), "gelu": torch.nn.GELU(approximate="tanh"), "tanh": torch.nn.Tanh()}[activation]
    x = rng.standard_normal((11, 7)).astype(dtype)
    dy = rng.standard_normal((11, 5)).astype(dtype)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = act(linear(xt))
    yt.backward(torch.from_numpy(dy))
    y = layer(x)
    dx = layer.backward(dy)
    tol = {"float64": 1e-12, "float32": 2e-5}[dtype]
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.dw, linear.weight.grad.numpy().T, rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.db, linear.bias.grad.numpy(), rtol=tol, atol=tol)
