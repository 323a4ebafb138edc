"""A network's parameters and gradients in two flat buffers, kept gradient arrays, and the lean layer path."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import get_backend
from gpudense.flat import ALIGN, FlatParams
from gpudense.functional import dense_backward, dense_forward
from gpudense.layer import Dense, ParamGrad
from gpudense.losses import softmax_cross_entropy
from gpudense.nn import MLP, ReLU, Sequential
from gpudense.optim import SGD, Adam


def _backward(model, seed=0, batch=5):
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((batch, model[0].in_features)).astype(model.dtype)
    y = model(x)
    model.backward(gen.standard_normal(y.shape).astype(model.dtype))


def test_an_mlps_parameters_and_gradients_are_views_of_its_flat_buffers():
    model = MLP([5, 7, 3, 2], backend="numpy", rng=0)
    flat = model.flat
    assert isinstance(flat, FlatParams)
    pgs = model.param_grads()
    assert list(flat.layout.names) == [pg.name for pg in pgs] == ["0.w", "0.b", "2.w", "2.b", "4.w", "4.b"]
    for pg, view in zip(pgs, flat.param_views):
        assert pg.param is view and np.shares_memory(pg.param, flat.params)
        assert (pg.param.ctypes.data - flat.params.ctypes.data) % (ALIGN * 4) == 0  # 64-byte aligned
    _backward(model)
    for pg, view in zip(model.param_grads(), flat.grad_views):
        assert pg.grad is view
    gaps = np.ones(flat.layout.size, bool)
    for start, size in zip(flat.layout.offsets, flat.layout.sizes):
        gaps[start:start + size] = False
    assert gaps.any() and not flat.params[gaps].any() and not flat.grads[gaps].any()  # the gaps hold zeros


def test_flat_buffers_change_nothing_the_layers_compute():
    gen = np.random.default_rng(1)
    x = gen.standard_normal((6, 4)).astype(np.float32)
    dy = gen.standard_normal((6, 3)).astype(np.float32)
    model = Sequential(Dense(4, 8, backend="numpy", rng=0), ReLU(), Dense(8, 3, backend="numpy", rng=1))
    alone = [Dense(4, 8, backend="numpy", rng=0), ReLU(), Dense(8, 3, backend="numpy", rng=1)]
    assert model.flat is not None and alone[0].w.base is None  # a layer alone keeps its own arrays
    y = model(x)
    h = alone[1](alone[0](x))
    np.testing.assert_array_equal(y, alone[2](h))
    dx = model.backward(dy, input_grad=True)
    np.testing.assert_array_equal(dx, alone[0].backward(alone[1].backward(alone[2].backward(dy))))
    for a, b in ((model[0], alone[0]), (model[2], alone[2])):
        np.testing.assert_array_equal(a.dw, b.dw)
        np.testing.assert_array_equal(a.db, b.db)


def test_gradient_arrays_are_kept_across_zero_grad():
    layer = Dense(3, 2, backend="numpy", rng=0)
    x = np.ones((4, 3), np.float32)
    layer.backward(np.ones_like(layer(x)))
    dw, db = layer.dw, layer.db
    first = dw.copy()
    layer.backward(np.ones_like(layer(x)))  # accumulates into the same arrays
    assert layer.dw is dw and np.array_equal(dw, 2 * first)
    layer.zero_grad()
    assert layer.dw is None and layer.db is None
    layer.backward(np.ones_like(layer(x)))  # the next backward writes (not adds) into them again
    assert layer.dw is dw and layer.db is db and np.array_equal(dw, first)


def test_a_block_with_other_parameters_leaves_the_network_without_flat_buffers():
    class Scale:
        def __init__(self):
            self.s = np.ones(3, np.float32)

        def forward(self, x):
            return x * self.s

        def backward(self, dy, input_grad=True):
            return dy * self.s

        def param_grads(self):
            return [ParamGrad("s", self.s, None)]

        def zero_grad(self):
            pass

        def to(self, backend):
            return self

    net = Sequential(Dense(2, 3, backend="numpy", rng=0), Scale())
    assert net.flat is None
    assert Sequential(ReLU()).flat is None  # no parameters at all


def test_a_nested_sequential_is_laid_out_in_the_outer_buffers():
    inner = Sequential(Dense(2, 3, backend="numpy", rng=0), ReLU())
    assert inner.flat is not None
    w_before = inner[0].w.copy()
    outer = Sequential(inner, Dense(3, 2, backend="numpy", rng=1))
    assert inner.flat is None and outer.flat is not None
    assert [pg.name for pg in outer.param_grads()] == ["0.0.w", "0.0.b", "1.w", "1.b"]
    assert inner[0].w is outer.flat.param_views[0]
    np.testing.assert_array_equal(inner[0].w, w_before)  # the values came along


def test_parameters_stay_views_through_reset_loading_and_moving():
    model = MLP([3, 4, 2], backend="numpy", rng=0)
    w = model[0].w
    model[0].reset_parameters(5)
    assert model[0].w is w and not np.array_equal(w, MLP([3, 4, 2], backend="numpy", rng=0)[0].w)
    state = MLP([3, 4, 2], backend="numpy", rng=1).state_dict()
    model.load_state_dict(state)
    assert model[0].w is w and np.array_equal(w, state["0.w"])
    assert model.to("numpy") is model and model[0].w is w  # the same backend: nothing moves
    flat_before = model.flat
    model.to(get_backend("numpy"))
    assert model.flat is flat_before


def test_bind_checks_what_it_is_given():
    layer = Dense(3, 2, backend="numpy", rng=0)
    good = dict(w=np.zeros((3, 2), np.float32), b=np.zeros(2, np.float32), dw=np.zeros((3, 2), np.float32),
                db=np.zeros(2, np.float32))
    for name, bad in (("w", np.zeros((2, 3), np.float32)), ("b", np.zeros(2, np.float64)),
                      ("dw", np.zeros((3, 4), np.float32)[:, :2]), ("db", None)):
        with pytest.raises(ValueError, match=f"bind: {name} must be a C-contiguous"):
            layer.bind(**{**good, name: bad})
    w = layer.w.copy()
    layer.bind(**good)
    assert layer.w is good["w"] and np.array_equal(good["w"], w)


@pytest.mark.parametrize("factory", [lambda m: Adam(m, lr=1e-2), lambda m: SGD(m, lr=0.1, momentum=0.9)])
def test_the_optimizer_steps_a_flat_network_in_one_update_and_the_same_bits(factory, monkeypatch):
    gen = np.random.default_rng(2)
    x = gen.standard_normal((16, 6)).astype(np.float32)
    labels = gen.integers(0, 3, 16)
    flat_model, copy_model = MLP([6, 9, 3], backend="numpy", rng=0), MLP([6, 9, 3], backend="numpy", rng=0)
    opts = factory(flat_model), factory(copy_model)
    calls = []
    original = type(opts[0])._apply
    monkeypatch.setattr(type(opts[0]), "_apply", lambda self, *a: (calls.append(self), original(self, *a))[1])
    for _ in range(4):
        for model, opt in zip((flat_model, copy_model), opts):
            loss, g = softmax_cross_entropy(model(x), labels)
            model.backward(g)
            if model is copy_model:  # gradients that are no views of the flat buffer: one update each
                for layer in model:
                    layer.dw, layer.db = layer.dw.copy(), layer.db.copy()
            opt.step()
            opt.zero_grad()
    assert calls.count(opts[0]) == 4  # one run over the whole buffer per step
    assert calls.count(opts[1]) == 4 * 4  # one per parameter
    for a, b in zip(flat_model.param_grads(), copy_model.param_grads()):
        np.testing.assert_array_equal(a.param, b.param)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_batch_of_one_gives_the_products_bits(dtype):
    gen = np.random.default_rng(3)
    x = gen.standard_normal((1, 33)).astype(dtype)
    w = gen.standard_normal((33, 17)).astype(dtype)
    dy = gen.standard_normal((1, 17)).astype(dtype)
    g = dense_backward(dy, x, w)
    np.testing.assert_array_equal(g.dw, np.matmul(x.T, dy))
    again = dense_backward(dy, x, w, out=g, accumulate=True)
    np.testing.assert_array_equal(again.dw, 2 * np.matmul(x.T, dy))


def test_a_narrow_output_of_a_large_batch_gives_the_weight_gradient():
    gen = np.random.default_rng(4)
    x = gen.standard_normal((512, 40))
    dy = gen.standard_normal((512, 3))
    w = gen.standard_normal((40, 3))
    g = dense_backward(dy, x, w)
    ref = np.einsum("ki,kj->ij", x, dy)
    assert g.dw.flags.c_contiguous
    np.testing.assert_allclose(g.dw, ref, rtol=1e-12, atol=1e-12)


def test_layers_open_their_stage_ranges_only_while_profiling(nvtx_ranges):
    be = get_backend("numpy")
    opened = nvtx_ranges
    layer = Dense(3, 2, activation="relu", backend="numpy", rng=0)
    x = np.ones((4, 3), np.float32)
    layer.backward(np.ones_like(layer(x)))
    assert opened == []  # not profiling: no range at all
    with be.profiled():
        layer.backward(np.ones_like(layer(x)))
    assert opened == ["gpudense.forward", "gpudense.backward.act", "gpudense.backward.dx", "gpudense.backward.dw"]
    assert be.profiling is False
    dense_forward(x, layer.w, layer.b)  # the public function, as the layer: no range while not profiling
    assert len(opened) == 4
    with be.profiled():
        dense_forward(x, layer.w, layer.b)
    assert opened[4:] == ["gpudense.forward"]


def test_fit_profiles_the_layers_for_its_run_only():
    from gpudense.data import make_synthetic
    from gpudense.training import TrainConfig, fit

    model = MLP([4, 2], backend="numpy", rng=0)
    seen = []
    fit(model, SGD(model), make_synthetic(40, 4, 2), TrainConfig(epochs=1, rng=0, profile=True),
        on_batch=lambda *a: seen.append(model.backend.profiling))
    assert seen and all(seen) and model.backend.profiling is False


def test_gradients_set_from_outside_are_checked_before_backward_adds_into_them():
    layer = Dense(3, 2, backend="numpy", rng=0)
    x = np.ones((4, 3), np.float32)
    layer.backward(np.ones_like(layer(x)))
    layer.dw = np.zeros((2, 3), np.float32)  # the wrong shape
    with pytest.raises(ValueError, match=r"out.dw must be a C-contiguous array of shape \(3, 2\)"):
        layer.backward(np.ones_like(layer(x)))
    layer.dw = np.zeros((3, 2), np.float32)  # a fitting array of the caller's: added into
    layer.backward(np.ones_like(layer(x)))
    np.testing.assert_array_equal(layer.dw, np.full((3, 2), 4.0, np.float32))
