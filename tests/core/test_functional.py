"""dense_forward / dense_backward against the loop-level reference."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from gpudense import dense_backward, dense_forward


def check_against_reference(x, w, b, dy, *, input_grad=True):
    ref.check_layer(x, w, b, dy, input_grad=input_grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "shape_x, n_out",
    [((7, 5), 3), ((1, 4), 6), ((3, 1), 1), ((2, 3, 4), 5), ((6,), 2), ((33, 17), 35)],
)
def test_matches_reference(xp, rng, dtype, shape_x, n_out):
    """On NumPy, and on CuPy where a device is usable: the same inputs, the same reference."""
    x, w, b, dy = (xp.asarray(a) for a in ref.random_inputs(rng, shape_x, n_out, dtype))
    check_against_reference(x, w, b, dy)


def test_float16_matches_reference(xp, rng):
    x, w, b, dy = (xp.asarray(a) for a in ref.random_inputs(rng, (9, 7), 5, np.float16))
    check_against_reference(x, w, b, dy)


def test_no_bias_and_no_input_grad(rng):
    x, w, _, dy = ref.random_inputs(rng, (4, 3), 2, np.float64)
    check_against_reference(x, w, None, dy, input_grad=False)


def test_float32_tolerance_is_tight_enough_to_catch_a_float16_path(rng):
    """The float32 tolerance must reject results that were computed in float16."""
    x, w, b, _ = ref.random_inputs(rng, (16, 64), 8, np.float32)
    wrong = dense_forward(x.astype(np.float16), w.astype(np.float16), b.astype(np.float16))
    with pytest.raises(AssertionError):
        ref.assert_close(wrong, ref.forward(x, w, b), ref.abs_forward(x, w, b), 64, np.float32, "y")


def test_empty_batch(rng):
    x, w, b, dy = ref.random_inputs(rng, (0, 4), 3, np.float32)
    y = dense_forward(x, w, b)
    assert y.shape == (0, 3)
    g = dense_backward(dy, x, w)
    assert g.dx.shape == (0, 4)
    np.testing.assert_array_equal(g.dw, np.zeros((4, 3), np.float32))
    np.testing.assert_array_equal(g.db, np.zeros(3, np.float32))


@pytest.mark.parametrize("layout", ["transposed", "strided", "fortran"])
def test_non_contiguous_inputs_equal_contiguous(rng, layout):
    x, w, b, dy = ref.random_inputs(rng, (6, 5), 4, np.float64)
    if layout == "transposed":
        xs, ws, dys = np.ascontiguousarray(x.T).T, np.ascontiguousarray(w.T).T, np.ascontiguousarray(dy.T).T
    elif layout == "fortran":
        xs, ws, dys = np.asfortranarray(x), np.asfortranarray(w), np.asfortranarray(dy)
    else:
        big = np.zeros((12, 10)); big[::2, ::2] = x; xs = big[::2, ::2]
        bigw = np.zeros((10, 8)); bigw[::2, ::2] = w; ws = bigw[::2, ::2]
        bigd = np.zeros((6, 12)); bigd[:, ::3] = dy; dys = bigd[:, ::3]
    assert not (xs.flags.c_contiguous and ws.flags.c_contiguous and dys.flags.c_contiguous)
    bs = np.zeros(8)[::2]; bs[...] = b
    np.testing.assert_allclose(dense_forward(xs, ws, bs), dense_forward(x, w, b), rtol=1e-13, atol=1e-13)
    for got, want in zip(dense_backward(dys, xs, ws), dense_backward(dy, x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy's, on NaN * 0 and inf - inf
def test_nan_and_inf_propagate():
    x = np.array([[1.0, np.nan], [2.0, 3.0], [np.inf, 0.0]])
    w = np.ones((2, 2))
    b = np.zeros(2)
    y = dense_forward(x, w, b)
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()
    assert np.isposinf(y[2]).all()
    dy = np.array([[1.0, 1.0], [np.nan, 0.0], [0.0, 1.0]])
    g = dense_backward(dy, x, w)
    assert np.isnan(g.db[0]) and g.db[1] == 2.0
    assert np.isnan(g.dx[1]).all() and np.isfinite(g.dx[0]).all()
    assert np.isnan(g.dw).any()


def test_forward_does_not_modify_inputs(rng):
    x, w, b, dy = ref.random_inputs(rng, (5, 4), 3, np.float32)
    copies = [a.copy() for a in (x, w, b, dy)]
    dense_forward(x, w, b)
    dense_backward(dy, x, w)
    for a, c in zip((x, w, b, dy), copies):
        np.testing.assert_array_equal(a, c)


def test_zero_in_features_gives_the_bias():
    x, w, b = np.ones((3, 0)), np.ones((0, 2)), np.array([1.0, -2.0])
    np.testing.assert_array_equal(dense_forward(x, w, b), np.tile(b, (3, 1)))
    g = dense_backward(np.ones((3, 2)), x, w)
    assert g.dx.shape == (3, 0) and g.dw.shape == (0, 2)
    np.testing.assert_array_equal(g.db, [3.0, 3.0])
