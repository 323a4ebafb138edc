"""Inputs NumPy accepts but gpudense refuses by name: other byte orders, masked arrays, non-bool
flags, negative seeds. Each is one line naming what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import Dense
from gpudense.functional import dense_backward, dense_forward
from gpudense.losses import mse_loss, softmax_cross_entropy
from gpudense.nn import MLP, GELU, ReLU, Tanh


def one_line(info):
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_big_endian_input_is_refused_by_name_with_the_conversion():
    x = np.ones((2, 3), dtype=">f4")
    w = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError) as info:
        dense_forward(x, w)
    message = one_line(info)
    assert "x has non-native byte order (dtype >f4, big-endian)" in message
    assert "x.astype(np.float32)" in message
    assert "must be a floating array" not in message  # it is one: the message says what is wrong


def test_a_big_endian_array_is_refused_everywhere_an_array_comes_in(rng):
    big = np.ones((2, 3), dtype=">f8")
    layer = Dense(3, 2, dtype="float64", backend="numpy", rng=0)
    with pytest.raises(TypeError, match="x has non-native byte order"):
        layer(big)
    y = layer(np.ones((2, 3)))
    with pytest.raises(TypeError, match="dy has non-native byte order"):
        layer.backward(np.ones((2, 2), dtype=">f8"))
    with pytest.raises(TypeError, match="w has non-native byte order"):
        dense_forward(np.ones((2, 3)), np.ones((3, 2), dtype=">f8"))
    for act in (ReLU(), GELU(), Tanh()):
        with pytest.raises(TypeError, match="x has non-native byte order"):
            act(big)
    with pytest.raises(TypeError, match="logits has non-native byte order"):
        softmax_cross_entropy(np.ones((2, 3), dtype=">f4"), np.array([0, 1]))
    with pytest.raises(TypeError, match="target has non-native byte order"):
        mse_loss(y, np.ones((2, 2), dtype=">f8"))


def test_a_little_endian_array_written_explicitly_is_native_here():
    if np.dtype("<f4") != np.dtype(np.float32):
        pytest.skip("a big-endian machine")
    x = np.ones((2, 3), dtype="<f4")
    assert dense_forward(x, np.ones((3, 4), np.float32)).shape == (2, 4)


def test_a_masked_array_is_refused_by_name():
    x = np.ma.masked_array(np.ones((2, 3), np.float32), mask=[[0, 1, 0], [0, 0, 0]])
    layer = Dense(3, 2, backend="numpy", rng=0)
    with pytest.raises(TypeError) as info:
        layer(x)
    message = one_line(info)
    assert "numpy.ma.MaskedArray" in message and "masks" in message and "filled" in message
    with pytest.raises(TypeError, match="MaskedArray"):
        dense_forward(x, np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="MaskedArray"):
        Tanh()(x)
    with pytest.raises(TypeError, match="MaskedArray"):
        MLP([3, 2], backend="numpy", rng=0)(x)


def test_flags_must_be_bools():
    x, w, dy = np.ones((2, 3)), np.ones((3, 4)), np.ones((2, 4))
    with pytest.raises(TypeError) as info:
        dense_backward(dy, x, w, bias="no")
    assert one_line(info) == "bias must be True or False; got 'no'"
    with pytest.raises(TypeError, match="input_grad must be True or False; got 1"):
        dense_backward(dy, x, w, input_grad=1)
    with pytest.raises(TypeError, match="bias must be True or False; got None"):
        Dense(3, 2, bias=None, backend="numpy")


def test_a_negative_seed_is_one_clear_error():
    with pytest.raises(ValueError) as info:
        Dense(3, 2, backend="numpy", rng=-1)
    assert one_line(info) == "rng must be a seed >= 0 (or a numpy.random.Generator); got -1"
    with pytest.raises(ValueError, match="rng must be a seed >= 0"):
        MLP([3, 2], backend="numpy", rng=-5)
