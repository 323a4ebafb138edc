"""Activations, losses, Sequential and MLP against loop-level references and finite differences.

References are written per element with the ``math`` module in float64, so
they share no array code with gpudense. Finite differences are central,
``(f(x + h) - f(x - h)) / 2h`` in float64 with ``h = 1e-6``: truncation error
O(h^2) ~ 1e-12 times the third derivative, rounding error ~ eps/h ~ 1e-10
times |f|; a tolerance of 1e-6 relative to the gradient's scale covers both
with a wide margin and still catches any wrong term (errors of order 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference import numeric_grad
from gpudense import Dense
from gpudense.losses import (
    check_labels,
    mse_loss,
    softmax_cross_entropy,
)
from gpudense.nn import GELU, MLP, ReLU, Sequential, Tanh, get_activation

# -- loop-level references ----------------------------------------------------------


def ref_act(name, x):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        if name == "relu":
            out[i] = v if v > 0 else 0.0
        elif name == "tanh":
            out[i] = math.tanh(v)
        else:  # GELU, tanh form, from its definition
            out[i] = 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))
    return out


def ref_softmax_ce(logits, labels):
    """(mean loss, grad) with explicit loops: loss_k = log(sum_j exp(z_kj - m_k)) + m_k - z_k,y."""
    z = np.asarray(logits, np.float64)
    batch, n = z.shape
    total = 0.0
    grad = np.zeros_like(z)
    for k in range(batch):
        m = max(z[k])
        s = sum(math.exp(z[k, j] - m) for j in range(n))
        total += math.log(s) + m - z[k, labels[k]]
        for j in range(n):
            grad[k, j] = (math.exp(z[k, j] - m) / s - (1.0 if j == labels[k] else 0.0)) / batch
    return total / batch, grad


def assert_grad_close(got, ref, name):
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(np.asarray(got, np.float64) - ref).max())
    assert err <= 1e-6 * scale, f"{name}: max error {err} vs scale {scale}"


# -- activations ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activation_forward_matches_reference(name, dtype, rng):
    x = rng.standard_normal((7, 5)).astype(dtype) * 3
    y = get_activation(name)(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    # float32: a few roundings of values of size O(|x|) in tanh/x**3: 1e-5 relative to max(1, |x|)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(y, ref_act(name, x), rtol=tol, atol=tol * 3)


@pytest.mark.parametrize("name", ["relu", "gelu", "tanh"])
def test_activation_backward_finite_differences(name, rng):
    x = rng.standard_normal((4, 6)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU's kink away from the difference stencil
    dy = rng.standard_normal(x.shape)
    act = get_activation(name)
    act(x)
    dx = act.backward(dy)
    ref = numeric_grad(lambda: float((ref_act(name, x) * dy).sum()), x)
    assert_grad_close(dx, ref, name)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_gelu_backward_is_finite_for_large_inputs(dtype):
    # x*x overflows (float16 from |x| = 256, float32 from 1.9e19); there tanh(u) is exactly +-1,
    # so dy/dx is exactly 1 (x > 0) or 0 (x < 0), as PyTorch's tanh GELU gives (1.0 at x = 300).
    big = {"float16": [300.0, 1000.0, 65504.0], "float32": [300.0, 1e20, 3e38],
           "float64": [300.0, 1e160, 1e300]}[dtype]
    x = np.array(big + [-v for v in big] + [10.0, -10.0], dtype=dtype)
    act = GELU()
    y = act(x)
    assert np.isfinite(y).all()
    dx = act.backward(np.ones_like(x))
    assert dx.dtype == x.dtype
    assert dx.tolist() == [1.0] * len(big) + [0.0] * len(big) + [1.0, 0.0]


def test_relu_gradient_is_zero_at_zero():
    act = ReLU()
    act(np.array([-1.0, 0.0, 2.0]))
    assert act.backward(np.ones(3)).tolist() == [0.0, 0.0, 1.0]


def test_gelu_tanh_form_is_close_to_exact_gelu():
    x = np.linspace(-6, 6, 1201)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.abs(GELU()(x) - exact).max() < 5e-4  # the bound the GELU docstring states


def test_activation_errors():
    act = Tanh()
    with pytest.raises(RuntimeError, match="before forward"):
        act.backward(np.ones(3))
    act(np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        act.backward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        act.backward(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="floating"):
        ReLU()(np.ones(3, np.int64))
    with pytest.raises(TypeError):
        ReLU()([1.0, 2.0])
    with pytest.raises(ValueError, match="unknown activation"):
        get_activation("sigmoid")
    assert act.backward(np.ones((2, 3)), input_grad=False) is None


# -- losses ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch,n", [(1, 2), (5, 3), (16, 10)])
def test_softmax_cross_entropy_matches_loop_reference(batch, n, rng):
    logits = rng.standard_normal((batch, n)) * 4
    labels = rng.integers(0, n, size=batch)
    loss, grad = softmax_cross_entropy(logits, labels)
    ref_loss, ref_grad = ref_softmax_ce(logits, labels)
    assert loss.shape == () and grad.shape == logits.shape
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)
    # float32: the same within float32 rounding of O(n) terms of size O(1)
    loss32, grad32 = softmax_cross_entropy(logits.astype(np.float32), labels)
    assert loss32.dtype == np.float32 and grad32.dtype == np.float32
    np.testing.assert_allclose(float(loss32), ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad32, ref_grad, atol=1e-6)


def test_softmax_cross_entropy_finite_differences(rng):
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, size=6)
    _, grad = softmax_cross_entropy(logits, labels)
    ref = numeric_grad(lambda: float(softmax_cross_entropy(logits, labels).loss), logits)
    assert_grad_close(grad, ref, "softmax CE")


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5000.0, 5000.0, 0.0]], np.float32)
    loss, grad = softmax_cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(float(loss)) and np.isfinite(grad).all()
    np.testing.assert_allclose(float(loss), 10000.0 / 2, rtol=1e-6)  # (0 + 10000) / 2


def test_softmax_cross_entropy_float16_reduces_in_float32(rng):
    logits = rng.standard_normal((8, 5)).astype(np.float16)
    labels = rng.integers(0, 5, size=8)
    loss, grad = softmax_cross_entropy(logits, labels)
    assert loss.dtype == np.float32 and grad.dtype == np.float16
    ref_loss, ref_grad = ref_softmax_ce(logits, labels)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-6)
    np.testing.assert_allclose(grad.astype(np.float64), ref_grad, atol=1e-3 / 8)  # float16 rounding of values <= 1/8


@pytest.mark.parametrize(
    "labels,exc,match",
    [
        (np.array([0.0, 1.0]), TypeError, "integer"),
        (np.array([0, 3]), ValueError, r"\[0, 3\)"),
        (np.array([-1, 0]), ValueError, r"\[0, 3\)"),
        (np.array([0, 1, 2]), ValueError, r"shape \(2,\)"),
        (np.array([[0], [1]]), ValueError, r"shape \(2,\)"),
        ([0, 1], TypeError, "numpy.ndarray"),
    ],
)
def test_softmax_cross_entropy_label_errors(labels, exc, match):
    with pytest.raises(exc, match=match):
        softmax_cross_entropy(np.zeros((2, 3)), labels)


def test_softmax_cross_entropy_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        softmax_cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(ValueError, match="non-empty"):
        softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64))
    with pytest.raises(TypeError, match="floating"):
        softmax_cross_entropy(np.zeros((2, 3), np.int64), np.array([0, 1]))
    check_labels(np.array([0, 2]), 2, 3)  # valid labels pass


def test_mse_matches_reference_and_finite_differences(rng):
    y = rng.standard_normal((3, 4))
    t = rng.standard_normal((3, 4))
    loss, grad = mse_loss(y, t)
    ref = sum((y[i] - t[i]) ** 2 for i in np.ndindex(y.shape)) / y.size
    np.testing.assert_allclose(float(loss), ref, rtol=1e-14)
    num = numeric_grad(lambda: float(mse_loss(y, t).loss), y)
    assert_grad_close(grad, num, "mse")
    with pytest.raises(ValueError, match="shape"):
        mse_loss(y, t[:2])
    with pytest.raises(TypeError, match="dtype"):
        mse_loss(y, t.astype(np.float32))
    with pytest.raises(ValueError, match="at least one"):
        mse_loss(np.zeros(0), np.zeros(0))


# -- Sequential and MLP ---------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_mlp_gradients_match_finite_differences(activation, rng):
    model = MLP([5, 7, 6, 3], activation=activation, dtype="float64", backend="numpy", rng=1)
    x = rng.standard_normal((4, 5))
    labels = rng.integers(0, 3, size=4)

    def loss():
        return float(softmax_cross_entropy(model(x), labels).loss)

    _, g = softmax_cross_entropy(model(x), labels)
    dx = model.backward(g, input_grad=True)
    for name, p, grad in model.param_grads():
        assert_grad_close(grad, numeric_grad(loss, p), name)
    assert_grad_close(dx, numeric_grad(loss, x), "dx")


def test_mlp_layout_names_and_repr():
    model = MLP([4, 8, 8, 2], activation="gelu", backend="numpy", rng=0)
    # The hidden layers carry the activation; the last layer has none.
    assert [(type(b).__name__, b.activation) for b in model] == [("Dense", "gelu"), ("Dense", "gelu"),
                                                                 ("Dense", None)]
    assert [pg.name for pg in model.param_grads()] == ["0.w", "0.b", "2.w", "2.b", "4.w", "4.b"]
    assert all(pg.grad is None for pg in model.param_grads())
    assert "MLP(sizes=[4, 8, 8, 2], activation='gelu'" in repr(model)
    assert "(1): Dense(in_features=8, out_features=8, activation='gelu'" in repr(Sequential(*model.blocks))
    # A Sequential names its blocks by index; the MLP by position in Dense, act, Dense, act, Dense.
    assert [pg.name for pg in Sequential(*model.blocks).param_grads()] == ["0.w", "0.b", "1.w", "1.b",
                                                                          "2.w", "2.b"]
    assert model.config() == {"sizes": [4, 8, 8, 2], "activation": "gelu", "bias": True, "dtype": "float32"}


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_mlp_equals_its_unfused_sequential_and_their_states_interchange(activation, rng):
    """MLP's fused layers against Sequential(Dense, act, Dense, act, Dense) with the same weights."""
    model = MLP([5, 7, 6, 3], activation=activation, dtype="float64", backend="numpy", rng=1)
    act = {"relu": ReLU, "gelu": GELU, "tanh": Tanh}[activation]
    unfused = Sequential(Dense(5, 7, dtype="float64", backend="numpy", rng=0), act(),
                         Dense(7, 6, dtype="float64", backend="numpy", rng=0), act(),
                         Dense(6, 3, dtype="float64", backend="numpy", rng=0))
    unfused.load_state_dict(model.state_dict())  # the same names: 0, 2, 4
    x = rng.standard_normal((9, 5))
    dy = rng.standard_normal((9, 3))
    np.testing.assert_allclose(model(x), unfused(x), rtol=1e-13, atol=1e-15)
    dx, dx_ref = model.backward(dy, input_grad=True), unfused.backward(dy, input_grad=True)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-14)
    for got, want in zip(model.param_grads(), unfused.param_grads()):
        assert got.name == want.name
        np.testing.assert_allclose(got.grad, want.grad, rtol=1e-12, atol=1e-14)
    back = MLP([5, 7, 6, 3], activation=activation, dtype="float64", backend="numpy", rng=2)
    back.load_state_dict(unfused.state_dict())
    for a, b in zip(back.param_grads(), model.param_grads()):
        np.testing.assert_array_equal(a.param, b.param)


def test_mlp_is_seeded_the_same_on_every_call():
    a = MLP([3, 5, 2], backend="numpy", rng=7)
    b = MLP([3, 5, 2], backend="numpy", rng=np.random.default_rng(7))
    for pa, pb in zip(a.param_grads(), b.param_grads()):
        np.testing.assert_array_equal(pa.param, pb.param)


def test_first_layer_skips_input_gradient(monkeypatch, rng):
    model = MLP([3, 4, 2], backend="numpy", rng=0)
    calls = []
    orig = Dense.backward

    def spy(self, dy, input_grad=True):
        calls.append(input_grad)
        return orig(self, dy, input_grad)

    monkeypatch.setattr(Dense, "backward", spy)
    y = model(rng.standard_normal((5, 3)).astype(np.float32))
    assert model.backward(np.ones_like(y)) is None
    assert calls == [True, False]  # last layer needs dx, the first does not


def test_gradients_accumulate_until_zero_grad(rng):
    model = MLP([3, 4, 2], dtype="float64", backend="numpy", rng=0)
    x = rng.standard_normal((5, 3))
    y = model(x)
    model.backward(np.ones_like(y))
    once = {pg.name: pg.grad.copy() for pg in model.param_grads()}
    model(x)
    model.backward(np.ones_like(y))
    for pg in model.param_grads():
        np.testing.assert_allclose(pg.grad, 2 * once[pg.name], rtol=1e-14)
    model.zero_grad()
    assert all(pg.grad is None for pg in model.param_grads())


def test_state_dict_round_trip_and_errors():
    a = MLP([3, 4, 2], backend="numpy", rng=0)
    b = MLP([3, 4, 2], backend="numpy", rng=1)
    state = a.state_dict()
    b.load_state_dict(state)
    for pa, pb in zip(a.param_grads(), b.param_grads()):
        np.testing.assert_array_equal(pa.param, pb.param)
    state["0.w"][0, 0] += 1  # a copy: the model is untouched
    assert a[0].w[0, 0] != state["0.w"][0, 0]
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({k: v for k, v in state.items() if k != "2.b"})
    with pytest.raises(ValueError, match="expected shape"):
        b.load_state_dict({**state, "0.w": np.zeros((4, 3), np.float32)})
    with pytest.raises(TypeError, match="dtype"):
        b.load_state_dict({**state, "0.w": state["0.w"].astype(np.float64)})


def test_sequential_errors_and_to():
    with pytest.raises(ValueError):
        Sequential()
    with pytest.raises(TypeError, match="no forward"):
        Sequential(object())
    with pytest.raises(TypeError, match="one dtype"):
        Sequential(Dense(2, 2, dtype="float32", backend="numpy"), Dense(2, 2, dtype="float64", backend="numpy"))
    with pytest.raises(ValueError):
        MLP([4])
    with pytest.raises(ValueError):
        MLP([4, 0, 2])
    with pytest.raises(ValueError, match="unknown activation"):
        MLP([4, 2], activation="swish")
    model = MLP([2, 3, 2], backend="numpy", rng=0)
    assert model.to("numpy") is model and model.backend.name == "numpy"
