"""Every bad input gets a ValueError or TypeError naming what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import Dense, dense_backward, dense_forward, get_backend


def f32(*shape):
    return np.ones(shape, np.float32)


class FakeCupyArray:
    """Looks like a cupy.ndarray to gpudense's backend detection, without CuPy or a GPU."""

    __module__ = "cupy._core.core"

    def __init__(self, shape):
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.float32), len(shape)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((f32(2, 3), f32(3)), ValueError, r"w must be 2-D .* got .*shape \(3,\)"),
        ((f32(2, 3), f32(3, 4, 1)), ValueError, r"w must be 2-D"),
        ((np.float32(1.0), f32(1, 4)), TypeError, r"expected a numpy.ndarray or cupy.ndarray, got numpy.float32"),
        ((np.ones((), np.float32), f32(1, 4)), ValueError, r"x must have at least 1 dimension"),
        ((f32(2, 3), f32(4, 5)), ValueError, r"in_features 4; got x of shape \(2, 3\)"),
        ((f32(2, 3), f32(3, 4), f32(5)), ValueError, r"b must have shape \(4,\) .* got shape \(5,\)"),
        ((f32(2, 3), f32(3, 4), f32(1, 4)), ValueError, r"b must have shape \(4,\)"),
        ((f32(2, 3), np.ones((3, 4))), TypeError, r"same dtype .* x float32 and w float64"),
        ((f32(2, 3), f32(3, 4), np.ones(4)), TypeError, r"b must have w's dtype float32; got float64"),
        ((np.ones((2, 3), np.int64), np.ones((3, 4), np.int64)), TypeError, r"x must be a floating array .* got dtype int64"),
        ((np.ones((2, 3), bool), f32(3, 4)), TypeError, r"x must be a floating array .* got dtype bool"),
        ((f32(2, 3), np.ones((3, 4), np.complex64)), TypeError, r"w must be a floating array .* complex64"),
        (([[1.0, 2.0]], f32(2, 2)), TypeError, r"expected a numpy.ndarray or cupy.ndarray, got builtins.list"),
        ((f32(2, 3), FakeCupyArray((3, 4))), TypeError, r"one backend .* mix of cupy._core.core.FakeCupyArray, numpy.ndarray"),
    ],
)
def test_forward_rejects(args, exc, match):
    with pytest.raises(exc, match=match):
        dense_forward(*args)


@pytest.mark.parametrize(
    "dy, exc, match",
    [
        (f32(2, 5), ValueError, r"dy must have the forward output's shape \(2, 4\); got shape \(2, 5\)"),
        (f32(3, 4), ValueError, r"shape \(2, 4\); got shape \(3, 4\)"),
        (f32(8), ValueError, r"shape \(2, 4\); got shape \(8,\)"),
        (np.ones((2, 4)), TypeError, r"dy must have the forward dtype float32; got float64"),
        (np.ones((2, 4), np.int32), TypeError, r"dy must be a floating array"),
        (FakeCupyArray((2, 4)), TypeError, r"one backend"),
    ],
)
def test_backward_rejects(dy, exc, match):
    with pytest.raises(exc, match=match):
        dense_backward(dy, f32(2, 3), f32(3, 4))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(in_features=0, out_features=2), ValueError, r"in_features must be a positive int; got 0"),
        (dict(in_features=3, out_features=-1), ValueError, r"out_features must be a positive int; got -1"),
        (dict(in_features=2.0, out_features=2), ValueError, r"in_features must be a positive int; got 2.0"),
        (dict(in_features=True, out_features=2), ValueError, r"in_features must be a positive int; got True"),
        (dict(in_features=2, out_features=2, dtype="int32"), TypeError, r"dtype must be float16, bfloat16, float32 or float64; got int32"),
        (dict(in_features=2, out_features=2, dtype="nonsense"), TypeError, r"got 'nonsense'"),
        (dict(in_features=2, out_features=2, backend="tpu"), ValueError, r"unknown backend 'tpu'; expected one of \('auto', 'numpy', 'cupy'\)"),
        (dict(in_features=2, out_features=2, backend=3), TypeError, r"backend must be a str"),
        (dict(in_features=2, out_features=2, rng="seed"), TypeError, r"rng must be a numpy.random.Generator, an int seed or None; got str"),
        (dict(in_features=2, out_features=2, bias=1), TypeError, r"bias must be True or False; got 1"),
    ],
)
def test_dense_constructor_rejects(kwargs, exc, match):
    kwargs.setdefault("backend", "numpy")
    with pytest.raises(exc, match=match):
        Dense(**kwargs)


def test_dense_rejects_bad_calls():
    layer = Dense(3, 4, backend="numpy", rng=0)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(f32(2, 4))
    with pytest.raises(ValueError, match=r"in_features 3; got x of shape \(2, 5\)"):
        layer(f32(2, 5))
    with pytest.raises(TypeError, match=r"x float64 and w float32"):
        layer(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"one backend .* mix of cupy._core.core.FakeCupyArray, numpy.ndarray. Move them with Dense.to"):
        layer(FakeCupyArray((2, 3)))
    layer(f32(2, 3))
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape \(2, 4\)"):
        layer.backward(f32(2, 3))


def test_unknown_backend_name():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'"):
        get_backend("cuda")
