"""The Dense layer: initialisation, gradient accumulation, zero_grad, parameters, repr."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import Dense, ParamGrad, dense_backward, dense_forward, get_backend


def test_default_init_is_pytorchs_uniform(rng):
    layer = Dense(400, 300, backend="numpy", rng=rng)
    bound = 1 / np.sqrt(400)
    assert layer.w.shape == (400, 300) and layer.b.shape == (300,)
    assert layer.w.dtype == np.float32 and layer.b.dtype == np.float32
    for p in (layer.w, layer.b):
        assert np.all(np.abs(p) <= bound)
    # 120,000 draws of U(-a, a): mean 0, variance a^2/3 (5 standard errors of slack).
    assert abs(layer.w.mean()) < 5 * bound / np.sqrt(3 * layer.w.size)
    assert abs(layer.w.var() / (bound**2 / 3) - 1) < 0.02


def test_seed_and_generator_give_the_same_layer():
    a = Dense(5, 3, backend="numpy", rng=7)
    b = Dense(5, 3, backend="numpy", rng=np.random.default_rng(7))
    c = Dense(5, 3, backend="numpy", rng=8)
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.b, b.b)
    assert not np.array_equal(a.w, c.w)


def test_reset_parameters_redraws_and_clears_grads():
    layer = Dense(4, 2, backend="numpy", rng=0)
    layer(np.ones((3, 4), np.float32))
    layer.backward(np.ones((3, 2), np.float32))
    w0 = layer.w.copy()
    layer.reset_parameters(1)
    assert not np.array_equal(layer.w, w0)
    assert layer.dw is None and layer.db is None
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((3, 2), np.float32))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", np.float64])
def test_dtypes(dtype):
    layer = Dense(3, 2, dtype=dtype, backend="numpy", rng=0)
    assert layer.w.dtype == np.dtype(dtype) and layer.b.dtype == np.dtype(dtype)
    y = layer(np.ones((2, 3), dtype))
    assert y.dtype == np.dtype(dtype)


def test_forward_and_backward_call_the_functional_core(rng):
    layer = Dense(6, 4, dtype="float64", backend="numpy", rng=rng)
    x = rng.standard_normal((2, 5, 6))
    dy = rng.standard_normal((2, 5, 4))
    np.testing.assert_array_equal(layer(x), dense_forward(x, layer.w, layer.b))
    dx = layer.backward(dy)
    g = dense_backward(dy, x, layer.w)
    np.testing.assert_array_equal(dx, g.dx)
    np.testing.assert_array_equal(layer.dw, g.dw)
    np.testing.assert_array_equal(layer.db, g.db)


def test_gradients_accumulate_until_zero_grad(rng):
    layer = Dense(3, 2, dtype="float64", backend="numpy", rng=rng)
    assert layer.dw is None and layer.db is None
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    d1, d2 = rng.standard_normal((4, 2)), rng.standard_normal((5, 2))
    layer(x1)
    layer.backward(d1)
    layer(x2)
    layer.backward(d2)
    np.testing.assert_allclose(layer.dw, x1.T @ d1 + x2.T @ d2, rtol=1e-13)
    np.testing.assert_allclose(layer.db, d1.sum(0) + d2.sum(0), rtol=1e-13)
    layer.zero_grad()
    assert layer.dw is None and layer.db is None
    layer(x2)
    layer.backward(d2)
    np.testing.assert_allclose(layer.dw, x2.T @ d2, rtol=1e-13)


def test_a_second_backward_after_one_forward_is_refused_and_changes_nothing(rng):
    """As PyTorch refuses a second backward through one graph: the first used the saved input."""
    layer = Dense(3, 2, dtype="float64", backend="numpy", rng=rng)
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer(x)
    layer.backward(dy)
    dw = layer.dw.copy()
    for _ in range(2):  # after zero_grad too: the saved input is gone either way
        with pytest.raises(RuntimeError, match="^Dense.backward called twice after one forward: the first used "
                                               "the saved input; run forward again before each backward"):
            layer.backward(dy)
        np.testing.assert_array_equal(layer.dw, dw)
        layer.zero_grad()
        dw = None
        assert layer.dw is None


def test_an_mlp_refuses_a_second_backward_too():
    from gpudense.nn import MLP

    model = MLP([3, 4, 2], backend="numpy", rng=0)
    g = np.ones((5, 2), np.float32)
    model(np.ones((5, 3), np.float32))
    model.backward(g)
    with pytest.raises(RuntimeError, match="called twice after one forward"):
        model.backward(g)


@pytest.mark.parametrize("name,value,match", [
    ("w", np.zeros((3, 2), np.float64), r"Dense.w must be an array of shape \(3, 2\) and dtype float32, the "
                                        r"layer's; got .*float64"),
    ("w", np.zeros((2, 3), np.float32), r"Dense.w must be an array of shape \(3, 2\).*got .*\(2, 3\)"),
    ("w", [[0.0, 0.0]] * 3, r"Dense.w must be an array .*; got list"),
    ("b", np.zeros(3, np.float32), r"Dense.b must be an array of shape \(2,\) and dtype float32"),
    ("b", None, r"Dense.b must be an array of shape \(2,\).*got NoneType"),
])
def test_assigning_a_parameter_of_another_dtype_or_shape_is_refused(name, value, match):
    layer = Dense(3, 2, backend="numpy", rng=0)
    before = getattr(layer, name).copy()
    with pytest.raises(ValueError, match=match):
        setattr(layer, name, value)
    np.testing.assert_array_equal(getattr(layer, name), before)
    y = layer(np.ones((4, 3), np.float32))
    assert y.dtype == np.float32


def test_assigning_a_parameter_that_fits_is_used():
    layer = Dense(3, 2, backend="numpy", rng=0)
    layer.w = np.ones((3, 2), np.float32)
    layer.b = np.zeros(2, np.float32)
    np.testing.assert_array_equal(layer(np.ones((1, 3), np.float32)), [[3.0, 3.0]])
    no_bias = Dense(3, 2, bias=False, backend="numpy", rng=0)
    no_bias.b = None
    assert no_bias.b is None
    with pytest.raises(ValueError, match=r"Dense.b of a layer without a bias \(bias=False\) must stay None"):
        no_bias.b = np.zeros(2, np.float32)
    assert no_bias.b is None


def test_input_grad_false_returns_none_and_still_fills_dw(rng):
    layer = Dense(3, 2, dtype="float64", backend="numpy", rng=rng)
    x = rng.standard_normal((4, 3))
    layer(x)
    assert layer.backward(np.ones((4, 2)), input_grad=False) is None
    np.testing.assert_allclose(layer.dw, x.T @ np.ones((4, 2)))


def test_no_bias():
    layer = Dense(3, 2, bias=False, backend="numpy", rng=0)
    assert layer.b is None and not layer.bias
    x = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(layer(x), x @ layer.w)
    layer.backward(np.ones((4, 2), np.float32))
    assert layer.db is None
    assert [pg.name for pg in layer.param_grads()] == ["w"]


def test_param_grads_walks_the_live_arrays():
    layer = Dense(3, 2, backend="numpy", rng=0)
    pgs = layer.param_grads()
    assert [pg.name for pg in pgs] == ["w", "b"]
    assert all(isinstance(pg, ParamGrad) and pg.grad is None for pg in pgs)
    assert pgs[0].param is layer.w and pgs[1].param is layer.b
    layer(np.ones((1, 3), np.float32))
    layer.backward(np.ones((1, 2), np.float32))
    pgs = layer.param_grads()
    assert pgs[0].grad is layer.dw and pgs[1].grad is layer.db
    w_before = layer.w.copy()
    w = pgs[0].param
    w -= 1.0  # an optimizer's in-place update reaches the layer
    np.testing.assert_array_equal(layer.w, w_before - 1.0)


def test_to_same_backend_is_a_no_op():
    layer = Dense(3, 2, backend="numpy", rng=0)
    w = layer.w
    assert layer.to("numpy") is layer and layer.w is w
    assert layer.to(get_backend("numpy")) is layer


def test_repr_shows_configuration():
    layer = Dense(784, 10, bias=False, dtype="float64", backend="numpy", rng=0)
    assert repr(layer) == "Dense(in_features=784, out_features=10, bias=False, dtype=float64, backend='numpy')"
