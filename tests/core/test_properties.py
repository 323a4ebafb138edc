"""Property-based tests over shapes (0 and 1 in every dimension), dtypes and memory layouts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from gpudense import Dense, dense_backward, dense_forward

dims = st.integers(min_value=0, max_value=6)
feature_dims = st.integers(min_value=0, max_value=6)  # dense_forward allows n_in = 0
dtypes = st.sampled_from([np.float64, np.float32, np.float16])
layouts = st.sampled_from(["c", "f", "strided", "reversed"])


def _layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``a`` in another memory layout."""
    if layout == "f":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return a


@st.composite
def problems(draw, features=feature_dims):
    lead = draw(st.lists(dims, min_size=0, max_size=2))  # leading batch dims, possibly none
    n_in, n_out = draw(features), draw(features)
    dtype = draw(dtypes)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, tuple(lead) + (n_in,)).astype(dtype)
    w = rng.uniform(-1, 1, (n_in, n_out)).astype(dtype)
    b = rng.uniform(-1, 1, n_out).astype(dtype)
    dy = rng.uniform(-2, 2, tuple(lead) + (n_out,)).astype(dtype)
    layout = draw(st.tuples(layouts, layouts, layouts))
    return x, w, b, dy, layout


@settings(max_examples=150, deadline=None)
@given(problems(), st.booleans(), st.booleans())
def test_any_shape_dtype_layout_matches_reference(problem, use_bias, input_grad):
    x, w, b, dy, (lx, lw, ldy) = problem
    if not use_bias:
        b = None
    xs, ws, dys = _layout(x, lx), _layout(w, lw), _layout(dy, ldy)
    n_in, n_out = w.shape
    batch = int(np.prod(x.shape[:-1]))

    y = dense_forward(xs, ws, b)
    assert y.shape == x.shape[:-1] + (n_out,) and y.dtype == x.dtype
    ref.assert_close(y, ref.forward(x, w, b), ref.abs_forward(x, w, b), n_in, x.dtype, "y")

    dx, dw, db = dense_backward(dys, xs, ws, bias=use_bias, input_grad=input_grad)
    rdx, rdw, rdb = ref.backward(dy, x, w)
    sdx, sdw, sdb = ref.abs_backward(dy, x, w)
    if input_grad:
        assert dx.shape == x.shape and dx.dtype == x.dtype
        ref.assert_close(dx, rdx, sdx, n_out, x.dtype, "dx")
    else:
        assert dx is None
    assert dw.shape == w.shape and dw.dtype == x.dtype
    ref.assert_close(dw, rdw, sdw, batch, x.dtype, "dw")
    if use_bias:
        assert db.shape == (n_out,) and db.dtype == x.dtype
        ref.assert_close(db, rdb, sdb, batch, x.dtype, "db")
    else:
        assert db is None


@settings(max_examples=40, deadline=None)
@given(problems(features=st.integers(1, 6)), st.integers(1, 3))  # Dense needs sizes >= 1
def test_layer_accumulates_like_a_sum_of_calls(problem, calls):
    """k forward/backward pairs without zero_grad give k times the gradient of one (exact in float64)."""
    x, w, b, dy, _ = problem
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    layer = Dense(w.shape[0], w.shape[1], dtype="float64", backend="numpy", rng=0)
    single = dense_backward(dy, x, layer.w)
    for _ in range(calls):
        layer(x)
        layer.backward(dy)
    np.testing.assert_allclose(layer.dw, calls * single.dw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.db, calls * single.db, rtol=1e-12, atol=1e-12)
