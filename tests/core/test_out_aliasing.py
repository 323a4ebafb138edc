"""dense_backward's ``out`` arrays must not overlap an input or each other: a ``dx`` written into ``x`` before
``dw = x.T @ dy`` reads it would make ``dw`` silently wrong; each overlap is one line naming both arrays."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from gpudense import dense_act_backward, dense_act_forward, dense_backward
from gpudense.functional import DenseGrads


@pytest.fixture
def layer(rng):
    x, w, b, dy = ref.random_inputs(rng, (4, 4), 4, np.float64)  # square: dx, x, dy, w, dw all fit one another
    return x, w, dy


def _cases(x, w, dy):
    dw, db = np.empty_like(w), np.empty(4)
    flat = np.empty(40)
    return [
        ("out.dx", "x", DenseGrads(x, dw, db)),
        ("out.dx", "dy", DenseGrads(dy, dw, db)),
        ("out.dx", "w", DenseGrads(w, dw, db)),
        ("out.dw", "w", DenseGrads(None, w, db)),
        ("out.dw", "x", DenseGrads(None, x, db)),
        ("out.db", "dy", DenseGrads(None, dw, dy[0])),
        ("out.dx", "out.dw", DenseGrads(dw, dw, db)),
        ("out.dw", "out.db", DenseGrads(None, flat[:16].reshape(4, 4), flat[14:18])),
    ]


@pytest.mark.parametrize("case", range(8))
def test_an_out_array_overlapping_an_input_or_another_out_is_refused(layer, case):
    x, w, dy = layer
    first, second, out = _cases(x, w, dy)[case]
    before = [a.copy() for a in (x, w, dy)]
    with pytest.raises(ValueError, match=rf"^{first} shares memory with {second}; each out array must be memory "
                                         "of its own"):
        dense_backward(dy, x, w, out=out)
    for a, b in zip(before, (x, w, dy)):
        np.testing.assert_array_equal(a, b)  # refused before anything was written


def test_the_fused_backward_refuses_dx_over_the_saved_activation(rng):
    x, w, b, dy = ref.random_inputs(rng, (4, 4), 4, np.float64)
    y, saved = dense_act_forward(x, w, b, activation="relu")
    with pytest.raises(ValueError, match="out.dx shares memory with saved"):
        dense_act_backward(dy, x, w, saved, activation="relu",
                           out=DenseGrads(saved, np.empty_like(w), np.empty(4)))


def test_out_arrays_side_by_side_in_one_buffer_are_fine(layer):
    """dw and db as adjacent views of one flat buffer (as the flat gradient buffers are) do not overlap."""
    x, w, dy = layer
    flat = np.empty(20)
    out = DenseGrads(np.empty_like(x), flat[:16].reshape(4, 4), flat[16:])
    g = dense_backward(dy, x, w, out=out)
    np.testing.assert_allclose(g.dw, x.T @ dy)
    np.testing.assert_allclose(g.db, dy.sum(0))
    np.testing.assert_allclose(g.dx, dy @ w.T)


def test_an_out_array_within_an_inputs_bounds_but_on_none_of_its_elements_passes(rng):
    """w is column 0 of a (4, 2) buffer, out.db is element [0, 1]: the memory bounds overlap, the elements do not."""
    buf = rng.standard_normal((4, 2))
    w, x, dy = buf[:, :1], rng.standard_normal((3, 4)), rng.standard_normal((3, 1))
    assert np.may_share_memory(w, buf[0, 1:]) and not np.shares_memory(w, buf[0, 1:])
    g = dense_backward(dy, x, w, out=DenseGrads(None, np.empty((4, 1)), buf[0, 1:]))
    np.testing.assert_allclose(g.db, dy.sum(0))
    np.testing.assert_allclose(g.dw, x.T @ dy)


def test_overlap_through_memory_no_array_owns_is_refused_on_the_as_usual_path(layer):
    """x and out.dx as two arrays over one bytearray (as two DLPack views of one tensor are): neither owns the
    memory, so only the memory test tells; the call before passes the same checks with apart arrays."""
    x, w, dy = layer
    memory = bytearray(x.nbytes)
    x_view = np.frombuffer(memory, dtype=x.dtype).reshape(x.shape)
    x_view[...] = x
    dx_view = np.frombuffer(memory, dtype=x.dtype).reshape(x.shape)
    assert x_view.base is not dx_view.base
    good = dense_backward(dy, x_view, w, out=DenseGrads(np.empty_like(x), np.empty_like(w), np.empty(4)))
    np.testing.assert_allclose(good.dw, x.T @ dy)
    with pytest.raises(ValueError, match="^out.dx shares memory with x;"):
        dense_backward(dy, x_view, w, out=DenseGrads(dx_view, np.empty_like(w), np.empty(4)))
