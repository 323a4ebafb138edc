"""Gradient buckets: the layout, packing, and no copy where gradients already are views into one buffer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gpudense.distributed import GradientBuckets, LocalCommunicator
from gpudense.layer import Dense, ParamGrad
from gpudense.nn import MLP


def load_fakes():
    spec = importlib.util.spec_from_file_location("fakes", Path(__file__).with_name("fakes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _backward(model, rng, batch=5):
    x = rng.standard_normal((batch, model.sizes[0])).astype(model.dtype)
    y = model(x)
    model.backward(rng.standard_normal(y.shape).astype(model.dtype))


def _grads(model):
    return {pg.name: pg.grad.copy() for pg in model.param_grads()}


def test_one_bucket_per_dtype_in_parameter_order():
    model = MLP([4, 8, 3], backend="numpy", rng=0)
    (bucket,) = GradientBuckets(model, LocalCommunicator()).buckets
    assert bucket.names == ["0.w", "0.b", "2.w", "2.b"]
    assert bucket.offsets == [0, 32, 40, 64] and bucket.size == 67
    assert bucket.dtype == np.float32


def test_the_capacity_starts_new_buckets_and_a_large_parameter_has_its_own():
    model = MLP([4, 8, 3], backend="numpy", rng=0)  # 32, 8, 24, 3 float32 elements
    buckets = GradientBuckets(model, LocalCommunicator(), bucket_bytes=40 * 4).buckets
    assert [b.names for b in buckets] == [["0.w", "0.b"], ["2.w", "2.b"]]
    tiny = GradientBuckets(model, LocalCommunicator(), bucket_bytes=1).buckets
    assert [b.names for b in tiny] == [["0.w"], ["0.b"], ["2.w"], ["2.b"]]


class TwoDtypes:
    """A model whose two layers have different dtypes (GradientBuckets needs only param_grads and backend)."""

    def __init__(self):
        self.layers = [Dense(3, 2, dtype="float32", backend="numpy", rng=0),
                       Dense(2, 2, dtype="float64", backend="numpy", rng=1)]
        self.backend = self.layers[0].backend

    def param_grads(self):
        return [ParamGrad(f"{i}.{pg.name}", pg.param, pg.grad)
                for i, layer in enumerate(self.layers) for pg in layer.param_grads()]


def test_dtypes_never_share_a_bucket():
    buckets = GradientBuckets(TwoDtypes(), LocalCommunicator()).buckets
    assert [(b.dtype.name, b.names) for b in buckets] == [("float32", ["0.w", "0.b"]), ("float64", ["1.w", "1.b"])]


@pytest.mark.parametrize("bucket_bytes", [0, -1, 2.5, True])
def test_bucket_bytes_must_be_a_positive_int(bucket_bytes):
    with pytest.raises(ValueError, match="bucket_bytes"):
        GradientBuckets(MLP([2, 2], backend="numpy", rng=0), LocalCommunicator(), bucket_bytes=bucket_bytes)


def test_fresh_gradients_are_packed_summed_and_unpacked(rng):
    model = MLP([4, 8, 3], backend="numpy", rng=0)
    _backward(model, rng)
    for layer in model:  # arrays of their own, as a model without flat buffers has
        layer.dw, layer.db = layer.dw.copy(), layer.db.copy()
    before = _grads(model)
    comm = load_fakes().Mirror(size=3)
    buckets = GradientBuckets(model, comm, bucket_bytes=40 * 4)
    buckets.allreduce()
    for name, g in _grads(model).items():
        np.testing.assert_array_equal(g, 3 * before[name])
    assert len(comm.seen) == 2  # one all-reduce per bucket
    assert all(seen is b.buffer for seen, b in zip(comm.seen, buckets.buckets))


def test_gradients_that_are_views_into_one_buffer_are_reduced_in_place(rng):
    model = MLP([4, 8, 3], backend="numpy", rng=0)
    _backward(model, rng)
    before = _grads(model)
    flat = np.empty(2 + 67, np.float32)  # a buffer that starts before the gradients, as an owner's might
    offset = 2
    for layer in (model[0], model[1]):  # the two Dense layers' gradients become views into flat, in order
        for attr in ("dw", "db"):
            g = getattr(layer, attr)
            view = flat[offset:offset + g.size].reshape(g.shape)
            view[...] = g
            setattr(layer, attr, view)
            offset += g.size
    comm = load_fakes().Mirror(size=2)
    buckets = GradientBuckets(model, comm)
    buckets.allreduce()
    (bucket,) = buckets.buckets
    assert bucket.buffer is None  # nothing was packed
    (seen,) = comm.seen
    assert np.shares_memory(seen, flat) and seen.size == 67
    for name, g in _grads(model).items():
        np.testing.assert_array_equal(g, 2 * before[name])


def test_views_out_of_order_are_packed(rng):
    model = MLP([4, 3], backend="numpy", rng=0)
    _backward(model, rng)
    flat = np.zeros(15, np.float32)
    layer = model[0]
    layer.db, layer.dw = (flat[:3].reshape(3), flat[3:].reshape(4, 3))  # b before w: not the bucket's order
    comm = load_fakes().Mirror(size=2)
    buckets = GradientBuckets(model, comm)
    buckets.allreduce()
    assert comm.seen[0] is buckets.buckets[0].buffer


def test_a_single_contiguous_gradient_is_its_own_span(rng):
    model = MLP([4, 3], bias=False, backend="numpy", rng=0)
    _backward(model, rng)
    dw = model[0].dw
    comm = load_fakes().Mirror(size=2)
    buckets = GradientBuckets(model, comm)
    buckets.allreduce()
    assert buckets.buckets[0].buffer is None and np.shares_memory(comm.seen[0], dw)


def test_a_missing_gradient_is_an_error_naming_the_parameter():
    model = MLP([4, 3], backend="numpy", rng=0)
    with pytest.raises(RuntimeError, match="parameter 0.w has no gradient on rank 0"):
        GradientBuckets(model, load_fakes().Mirror(size=2)).allreduce()


def test_parameters_are_broadcast_one_bucket_at_a_time():
    model = MLP([4, 8, 3], backend="numpy", rng=0)
    before = model.state_dict()
    comm = load_fakes().Mirror(size=2)
    GradientBuckets(model, comm, bucket_bytes=40 * 4).broadcast_params()
    assert len(comm.seen) == 2
    for name, p in model.state_dict().items():
        np.testing.assert_array_equal(p, before[name])


def test_one_process_needs_no_collective(rng):
    model = MLP([4, 3], backend="numpy", rng=0)
    _backward(model, rng)
    buckets = GradientBuckets(model, LocalCommunicator())
    buckets.allreduce()
    assert buckets.buckets[0].buffer is None


def test_gradients_in_a_flat_layout_with_alignment_gaps_are_reduced_in_place(rng):
    from gpudense.flat import ALIGN, FlatLayout

    model = MLP([4, 8, 3], backend="numpy", rng=0)
    _backward(model, rng)
    before = _grads(model)
    pgs = model.param_grads()
    layout = FlatLayout([(pg.name, pg.grad.shape) for pg in pgs])
    assert layout.size > sum(pg.grad.size for pg in pgs)  # the layout leaves gaps: 8 and 3 are no multiples of 16
    flat = np.full(layout.size, np.nan, np.float32)  # whatever the gaps hold is never read
    dense = [block for block in model if isinstance(block, Dense)]
    for layer, (w, b) in zip(dense, (("0.w", "0.b"), ("2.w", "2.b"))):
        for attr, name in (("dw", w), ("db", b)):
            view = layout.view(flat, name)
            view[...] = getattr(layer, attr)
            setattr(layer, attr, view)
    comm = load_fakes().Mirror(size=2)
    buckets = GradientBuckets(model, comm)
    buckets.allreduce()
    assert buckets.buckets[0].buffer is None  # nothing was packed
    (seen,) = comm.seen
    assert np.shares_memory(seen, flat) and seen.size == layout.offsets[-1] + layout.sizes[-1]
    for name, g in _grads(model).items():
        np.testing.assert_array_equal(g, 2 * before[name])
    # a gap of ALIGN elements or more is no layout of ours: packed
    model2 = MLP([4, 3], backend="numpy", rng=0)
    _backward(model2, rng)
    spaced = np.zeros(12 + ALIGN + 3, np.float32)
    model2[0].dw, model2[0].db = spaced[:12].reshape(4, 3), spaced[12 + ALIGN:]
    comm2 = load_fakes().Mirror(size=2)
    buckets2 = GradientBuckets(model2, comm2)
    buckets2.allreduce()
    assert comm2.seen[0] is buckets2.buckets[0].buffer


def test_an_mlps_gradients_are_reduced_in_place_from_its_flat_buffer(rng):
    model = MLP([4, 8, 3], backend="numpy", rng=0)
    _backward(model, rng)
    before = _grads(model)
    comm = load_fakes().Mirror(size=2)
    buckets = GradientBuckets(model, comm)
    buckets.allreduce()
    assert buckets.buckets[0].buffer is None  # nothing packed
    (seen,) = comm.seen
    assert np.shares_memory(seen, model.flat.grads)
    for name, g in _grads(model).items():
        np.testing.assert_array_equal(g, 2 * before[name])
