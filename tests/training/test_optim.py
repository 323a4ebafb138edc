"""Optimizers against per-element references of PyTorch's documented update rules.

The references loop over elements in Python floats (float64), one step at a
time, straight from the algorithm boxes in PyTorch's SGD/Adam/AdamW docs. The
optimizers run on float64 arrays; the few operations per step are each
correctly rounded, so 1e-12 relative covers the reordering of terms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpudense.layer import ParamGrad
from gpudense.nn import MLP
from gpudense.optim import SGD, Adam, AdamW, make_optimizer


class Params:
    """A stand-in model: named arrays and gradients set by the test."""

    def __init__(self, **arrays):
        self.params = arrays
        self.grads = {k: None for k in arrays}

    def param_grads(self):
        return [ParamGrad(k, p, self.grads[k]) for k, p in self.params.items()]

    def zero_grad(self):
        self.grads = {k: None for k in self.params}


def ref_sgd(p, grads, lr, momentum=0.0, wd=0.0, nesterov=False):
    p = [float(v) for v in p]
    buf = [None] * len(p)
    for g in grads:
        for i in range(len(p)):
            d = float(g[i]) + wd * p[i]
            if momentum:
                buf[i] = d if buf[i] is None else momentum * buf[i] + d
                d = d + momentum * buf[i] if nesterov else buf[i]
            p[i] -= lr * d
    return np.array(p)


def ref_adam(p, grads, lr, b1, b2, eps, wd=0.0, decoupled=False):
    p = [float(v) for v in p]
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    for t, g in enumerate(grads, start=1):
        for i in range(len(p)):
            gi = float(g[i])
            if decoupled:
                p[i] *= 1 - lr * wd
            else:
                gi += wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mhat = m[i] / (1 - b1**t)
            vhat = v[i] / (1 - b2**t)
            p[i] -= lr * mhat / (math.sqrt(vhat) + eps)
    return np.array(p)


def run(opt_factory, p0, grads):
    model = Params(x=p0.copy())
    opt = opt_factory(model)
    arr = model.params["x"]
    for g in grads:
        model.grads["x"] = g.copy()
        opt.step()
        opt.zero_grad()
    assert model.params["x"] is arr  # updated in place, never replaced
    return arr, opt


@pytest.fixture
def problem(rng):
    p0 = rng.standard_normal(7)
    grads = [rng.standard_normal(7) for _ in range(5)]
    return p0, grads


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=0.1),
        dict(lr=0.05, momentum=0.9),
        dict(lr=0.05, momentum=0.9, weight_decay=0.01),
        dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.1),
        dict(lr=0.2, weight_decay=0.3),
    ],
)
def test_sgd_matches_reference(kw, problem):
    p0, grads = problem
    got, _ = run(lambda m: SGD(m, **kw), p0, grads)
    ref = ref_sgd(p0, grads, kw["lr"], kw.get("momentum", 0.0), kw.get("weight_decay", 0.0), kw.get("nesterov", False))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_reference(wd, problem):
    p0, grads = problem
    got, opt = run(lambda m: Adam(m, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd), p0, grads)
    np.testing.assert_allclose(got, ref_adam(p0, grads, 0.01, 0.8, 0.99, 1e-6, wd), rtol=1e-12, atol=1e-14)
    assert opt.step_count == len(grads)


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adamw_matches_reference(wd, problem):
    p0, grads = problem
    got, _ = run(lambda m: AdamW(m, lr=0.01, weight_decay=wd), p0, grads)
    np.testing.assert_allclose(got, ref_adam(p0, grads, 0.01, 0.9, 0.999, 1e-8, wd, decoupled=True),
                               rtol=1e-12, atol=1e-14)


def test_adam_and_adamw_differ_only_through_weight_decay(problem):
    p0, grads = problem
    a, _ = run(lambda m: Adam(m, weight_decay=0.0), p0, grads)
    w, _ = run(lambda m: AdamW(m, weight_decay=0.0), p0, grads)
    np.testing.assert_array_equal(a, w)


@pytest.mark.parametrize("factory", [lambda m: SGD(m, lr=0.1, momentum=0.9), lambda m: Adam(m), lambda m: AdamW(m)])
def test_none_gradients_are_skipped(factory):
    model = Params(a=np.ones(3), b=np.ones(2))
    opt = factory(model)
    model.grads["a"] = np.ones(3)
    opt.step()
    assert model.params["b"].tolist() == [1.0, 1.0]
    assert all("b" not in named for named in opt.state.values())
    assert (model.params["a"] != 1.0).all()


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_float16_parameters_keep_float32_state(name):
    model = Params(x=np.ones(4, np.float16))
    kw = {"momentum": 0.9} if name == "sgd" else {}
    opt = make_optimizer(name, model, lr=0.01, **kw)
    model.grads["x"] = np.full(4, 0.5, np.float16)
    opt.step()
    assert model.params["x"].dtype == np.float16
    for named in opt.state.values():
        assert named["x"].dtype == np.float32
    assert (model.params["x"] < 1).all()


def test_state_dict_round_trip_continues_identically(problem):
    p0, grads = problem
    for factory in (lambda m: SGD(m, lr=0.05, momentum=0.9), lambda m: Adam(m, lr=0.01), lambda m: AdamW(m)):
        full, _ = run(factory, p0, grads)
        # three steps, save, restore into a fresh optimizer on a copy of the parameters, two more
        head, opt = run(factory, p0, grads[:3])
        state = opt.state_dict()
        assert all(isinstance(a, np.ndarray) for named in state["slots"].values() for a in named.values())
        model = Params(x=head.copy())
        opt2 = factory(model)
        opt2.load_state_dict(state)
        for g in grads[3:]:
            model.grads["x"] = g.copy()
            opt2.step()
        np.testing.assert_array_equal(model.params["x"], full)


def test_load_state_dict_rejects_mismatches():
    model = MLP([3, 4, 2], backend="numpy", rng=0)
    opt = Adam(model)
    y = model(np.ones((2, 3), np.float32))
    model.backward(np.ones_like(y))
    opt.step()
    state = opt.state_dict()
    with pytest.raises(ValueError, match="for Adam, this optimizer is SGD"):
        SGD(model, momentum=0.9).load_state_dict(state)
    bad = {**state, "slots": {**state["slots"], "m": {**state["slots"]["m"], "0.w": np.zeros((4, 3), np.float32)}}}
    with pytest.raises(ValueError, match=r"m/0.w: expected shape \(3, 4\)"):
        Adam(model).load_state_dict(bad)
    bad = {**state, "slots": {**state["slots"], "v": {**state["slots"]["v"], "0.b": np.zeros(4, np.float64)}}}
    with pytest.raises(TypeError, match="v/0.b: expected dtype float32"):
        Adam(model).load_state_dict(bad)
    bad = {**state, "slots": {**state["slots"], "m": {"9.w": np.zeros(2, np.float32)}}}
    with pytest.raises(ValueError, match="no parameter '9.w'"):
        Adam(model).load_state_dict(bad)
    with pytest.raises(ValueError, match="slots"):
        Adam(model).load_state_dict({**state, "slots": {"m": {}}})
    with pytest.raises(ValueError, match="'step'"):
        Adam(model).load_state_dict({k: v for k, v in state.items() if k != "step"})
    fresh = Adam(model)
    with pytest.raises(ValueError):
        fresh.load_state_dict({**state, "step": -1})
    assert fresh.step_count == 0 and fresh.state == {"m": {}, "v": {}, "master": {}}  # untouched on failure


@pytest.mark.parametrize("decoupled", [False, True])
def test_parameter_skipped_on_step_one_counts_its_own_steps(decoupled):
    # PyTorch keeps a step count per parameter (state["step"]), advanced only on steps that
    # see its gradient: b, without a gradient on step 1, takes steps t = 1, 2 on steps 2, 3,
    # bias corrections 1 - b1**1 and 1 - b1**2 (a global count would give t = 2, 3).
    rng = np.random.default_rng(7)
    a0, b0 = rng.standard_normal(3), rng.standard_normal(2)
    ga = [rng.standard_normal(3) for _ in range(3)]
    gb = [rng.standard_normal(2) for _ in range(2)]
    model = Params(a=a0.copy(), b=b0.copy())
    cls = AdamW if decoupled else Adam
    opt = cls(model, lr=0.01, betas=(0.8, 0.9), eps=1e-8, weight_decay=0.1)
    for step in range(3):
        model.grads = {"a": ga[step].copy(), "b": None if step == 0 else gb[step - 1].copy()}
        opt.step()
    assert opt.param_steps == {"a": 3, "b": 2} and opt.step_count == 3
    kw = dict(lr=0.01, b1=0.8, b2=0.9, eps=1e-8, wd=0.1, decoupled=decoupled)
    np.testing.assert_allclose(model.params["a"], ref_adam(a0, ga, **kw), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.params["b"], ref_adam(b0, gb, **kw), rtol=1e-12, atol=1e-15)


def test_load_state_dict_requires_state_for_every_stepped_parameter():
    model = MLP([3, 4, 2], backend="numpy", rng=0)
    opt = Adam(model)
    y = model(np.ones((2, 3), np.float32))
    model.backward(np.ones_like(y))
    opt.step()
    state = opt.state_dict()
    fresh = Adam(model)
    for slot in ("m", "v"):
        bad = {**state, "slots": {**state["slots"], slot: {}}}
        with pytest.raises(ValueError, match=rf"optimizer state {slot}: .*missing \['0.b', '0.w', '2.b', '2.w'\]"):
            fresh.load_state_dict(bad)
    with pytest.raises(ValueError, match="param_steps"):  # a step count beyond the optimizer's
        fresh.load_state_dict({**state, "param_steps": {**state["param_steps"], "0.w": 2}})
    unstepped = {**state, "param_steps": {k: v for k, v in state["param_steps"].items() if k != "0.w"}}
    with pytest.raises(ValueError, match=r"unexpected \['0.w'\]"):  # state for a parameter never stepped
        fresh.load_state_dict(unstepped)
    assert fresh.step_count == 0 and fresh.param_steps == {}


@pytest.mark.parametrize(
    "change,match",
    [
        ({"beta1": 5.0}, r"betas\[0\] must lie in \[0.0, 1.0\)"),
        ({"beta2": -0.1}, r"betas\[1\]"),
        ({"eps": 0.0}, "eps"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"lr": "0.1"}, "lr must be a number"),
    ],
)
def test_load_state_dict_checks_hyperparameter_ranges(change, match):
    model = Params(x=np.zeros(2))
    state = Adam(model).state_dict()
    fresh = Adam(model)
    with pytest.raises((ValueError, TypeError), match=match):
        fresh.load_state_dict({**state, "hyperparams": {**state["hyperparams"], **change}})
    assert fresh.hyperparams == Adam(model).hyperparams


def test_load_state_dict_checks_sgd_hyperparameters():
    model = Params(x=np.zeros(2))
    state = SGD(model, momentum=0.9).state_dict()
    for change, match in [({"momentum": 1.5}, "momentum"), ({"nesterov": 0.5}, "nesterov"),
                          ({"momentum": 0.0}, "momentum=0.0 does not fit")]:
        with pytest.raises(ValueError, match=match):
            SGD(model, momentum=0.9).load_state_dict({**state, "hyperparams": {**state["hyperparams"], **change}})


def _float16_and_float32_runs(factory, x0, g, steps):
    """``steps`` steps with gradient ``g`` on float16 and on float32 copies of ``x0`` (float16 values)."""
    assert (x0.astype(np.float16) == x0).all()
    out = {}
    for dtype in (np.float16, np.float32):
        model = Params(x=x0.astype(dtype))
        opt = factory(model)
        for _ in range(steps):
            model.grads["x"] = g.astype(dtype)
            opt.step()
        out[dtype] = model.params["x"]
    return out[np.float16], out[np.float32]


def test_float16_adamw_weight_decay_is_not_lost_to_rounding():
    # 100 decoupled decays by 1 - lr*wd = 1 - 1e-5 shrink w by 0.1%; each alone is below
    # float16's spacing near 1 (2**-11), so without a float32 master w would not move.
    x0 = np.linspace(0.5, 2.0, 16).astype(np.float16).astype(np.float64)
    x16, x32 = _float16_and_float32_runs(lambda m: AdamW(m, lr=1e-3, weight_decay=0.01), x0,
                                         np.zeros(16), 100)
    np.testing.assert_allclose(x32, x0 * (1 - 1e-5) ** 100, rtol=1e-5)  # 100 float32 roundings
    # float16 holds the float32 master rounded once: within half a float16 ulp (2**-11 relative)
    np.testing.assert_allclose(x16.astype(np.float64), x32, rtol=2.0**-11)
    assert (x16 < x0.astype(np.float16)).all()


def test_float16_small_sgd_updates_accumulate():
    # lr * g = 1e-4, under half of float16's spacing at 1 (4.9e-4): each step alone would round away.
    x0 = np.ones(8)
    x16, x32 = _float16_and_float32_runs(lambda m: SGD(m, lr=1e-3), x0, np.full(8, 0.1), 100)
    np.testing.assert_allclose(x32, 0.99, rtol=1e-5)  # 100 float32 roundings
    np.testing.assert_allclose(x16.astype(np.float64), x32, rtol=2.0**-11)


def test_float16_master_weights_survive_a_state_dict_round_trip():
    x0 = np.linspace(0.5, 2.0, 8).astype(np.float16).astype(np.float64)
    factory = lambda m: AdamW(m, lr=1e-3, weight_decay=0.01)  # noqa: E731
    full, _ = _float16_and_float32_runs(factory, x0, np.zeros(8), 60)
    model = Params(x=x0.astype(np.float16))
    opt = factory(model)
    for _ in range(30):
        model.grads["x"] = np.zeros(8, np.float16)
        opt.step()
    state = opt.state_dict()
    assert state["slots"]["master"]["x"].dtype == np.float32
    model2 = Params(x=model.params["x"].copy())
    opt2 = factory(model2)
    opt2.load_state_dict(state)
    for _ in range(30):
        model2.grads["x"] = np.zeros(8, np.float16)
        opt2.step()
    np.testing.assert_array_equal(model2.params["x"], full)


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda m: SGD(m, lr=0), "lr"),
        (lambda m: SGD(m, lr=0.1, momentum=1.0), "momentum"),
        (lambda m: SGD(m, lr=0.1, nesterov=True), "nesterov"),
        (lambda m: SGD(m, lr=0.1, weight_decay=-1), "weight_decay"),
        (lambda m: Adam(m, lr=-1e-3), "lr"),
        (lambda m: Adam(m, betas=(0.9, 1.0)), r"betas\[1\]"),
        (lambda m: Adam(m, eps=0), "eps"),
        (lambda m: make_optimizer("rmsprop", m), "unknown optimizer"),
    ],
)
def test_bad_hyperparameters(factory, match):
    with pytest.raises(ValueError, match=match):
        factory(Params(x=np.zeros(2)))


def test_optimizer_needs_param_grads():
    with pytest.raises(TypeError, match="param_grads"):
        Adam(object())


def test_training_an_mlp_lowers_the_loss(rng):
    from gpudense.losses import softmax_cross_entropy

    x = rng.standard_normal((64, 5)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int64)
    for name in ("sgd", "adam", "adamw"):
        model = MLP([5, 16, 2], backend="numpy", rng=0)
        kw = {"lr": 0.1, "momentum": 0.9} if name == "sgd" else {"lr": 0.01}
        opt = make_optimizer(name, model, **kw)
        losses = []
        for _ in range(30):
            loss, g = softmax_cross_entropy(model(x), labels)
            model.backward(g)
            opt.step()
            opt.zero_grad()
            losses.append(float(loss))
        assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])


# -- the public state API: check_state_dict validates and copies, load_prepared installs ----


def _stepped_adam(seed, steps=2, lr=1e-3):
    """An MLP and an Adam that has taken ``steps`` steps (every slot holds every parameter)."""
    model = MLP([3, 4, 2], backend="numpy", rng=seed)
    opt = Adam(model, lr=lr)
    x = np.random.default_rng(seed).standard_normal((5, 3)).astype(np.float32)
    for _ in range(steps):
        y = model(x)
        model.backward(np.ones_like(y))
        opt.step()
        opt.zero_grad()
    return model, opt


def _assert_same_state(a, b):
    assert {k: a[k] for k in ("type", "hyperparams", "step", "param_steps")} == {
        k: b[k] for k in ("type", "hyperparams", "step", "param_steps")}
    assert {slot: sorted(named) for slot, named in a["slots"].items()} == {
        slot: sorted(named) for slot, named in b["slots"].items()}
    for slot, named in a["slots"].items():
        for name, arr in named.items():
            np.testing.assert_array_equal(arr, b["slots"][slot][name])


def test_check_state_dict_changes_nothing_and_load_prepared_installs():
    _, source = _stepped_adam(seed=1, steps=3, lr=0.05)
    model, opt = _stepped_adam(seed=2, steps=1)
    saved, before = source.state_dict(), opt.state_dict()
    prepared = opt.check_state_dict(saved)
    _assert_same_state(opt.state_dict(), before)  # checking changed nothing
    assert prepared.step == 3 and prepared.hyperparams["lr"] == 0.05 and prepared.optimizer is opt
    for slot, named in saved["slots"].items():  # the prepared arrays are copies, not views of the state
        for name, a in named.items():
            assert not np.shares_memory(prepared.slots[slot][name], a)
    opt.load_prepared(prepared)
    _assert_same_state(opt.state_dict(), saved)
    assert opt.lr == 0.05 and opt.step_count == 3


def test_a_refused_state_changes_nothing():
    _, source = _stepped_adam(seed=1, steps=3)
    model, opt = _stepped_adam(seed=2, steps=1)
    saved, before = source.state_dict(), opt.state_dict()
    bad_states = [
        {**saved, "type": "SGD"},
        {**saved, "step": 1},  # param_steps of 3 exceed it
        {**saved, "hyperparams": {**saved["hyperparams"], "lr": -1.0}},
        {**saved, "slots": {**saved["slots"], "v": {**saved["slots"]["v"], "0.w": np.zeros((4, 3), np.float32)}}},
        {**saved, "slots": {**saved["slots"], "m": {**saved["slots"]["m"], "0.b": np.zeros(4, np.float64)}}},
        [saved],
    ]
    for bad in bad_states:
        with pytest.raises((ValueError, TypeError)):
            opt.check_state_dict(bad)
        with pytest.raises((ValueError, TypeError)):
            opt.load_state_dict(bad)
        _assert_same_state(opt.state_dict(), before)


def test_load_prepared_takes_only_this_optimizers_prepared_state():
    model, opt = _stepped_adam(seed=2, steps=1)
    other = Adam(model, lr=0.5)
    before = opt.state_dict()
    foreign = other.check_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="checked by another optimizer"):
        opt.load_prepared(foreign)
    with pytest.raises(TypeError, match="load_prepared takes what check_state_dict returned; got dict"):
        opt.load_prepared(other.state_dict())
    _assert_same_state(opt.state_dict(), before)


def test_loaded_state_is_the_optimizers_own():
    # the optimizer's later steps do not write into the dict it was loaded from, and vice versa
    _, source = _stepped_adam(seed=1, steps=2)
    model, opt = _stepped_adam(seed=2, steps=0)
    saved = source.state_dict()
    prepared = opt.check_state_dict(saved)
    opt.load_prepared(prepared)
    y = model(np.ones((2, 3), np.float32))
    model.backward(np.ones_like(y))
    opt.step()
    assert prepared.step == 2 and prepared.param_steps["0.w"] == 2 and opt.param_steps["0.w"] == 3
    assert saved["step"] == 2 and opt.step_count == 3
    opt.lr = 0.25
    assert prepared.hyperparams["lr"] == saved["hyperparams"]["lr"] == 1e-3


# -- flat state buffers, chunks, subnormal numbers ------------------------------------


def _step_mlp(opt, model, x):
    y = model(x)
    model.backward(np.ones_like(y))
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize("factory", [lambda m: Adam(m), lambda m: SGD(m, momentum=0.9)])
def test_state_of_all_parameters_lies_in_one_aligned_buffer_per_slot(factory):
    model = MLP([3, 5, 7, 2], backend="numpy", rng=0)
    opt = factory(model)
    _step_mlp(opt, model, np.ones((4, 3), np.float32))
    for slot in opt.SLOTS:
        arrays = opt.state[slot]
        assert sorted(arrays) == ["0.b", "0.w", "2.b", "2.w", "4.b", "4.w"]
        bases = {id(a.base) for a in arrays.values()}
        assert len(bases) == 1  # views of one flat buffer
        base = next(iter(arrays.values())).base
        assert base.ndim == 1 and base.flags.c_contiguous
        shapes = {pg.name: pg.param.shape for pg in model.param_grads()}
        for name, a in arrays.items():
            assert a.shape == shapes[name]
            assert (a.ctypes.data - base.ctypes.data) % 64 == 0  # every array starts on a cache line
        starts = sorted(a.ctypes.data for a in arrays.values())
        assert len(set(starts)) == len(starts)  # no two share memory
        assert not any(np.shares_memory(a, b) for a in arrays.values() for b in arrays.values() if a is not b)


def ref_adam_arrays(p, grads, lr, b1, b2, eps):
    """Adam in float64 arrays, straight from the update rule (for parameters too big for ref_adam's loops)."""
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


def test_a_parameter_larger_than_a_chunk_is_updated_everywhere(rng):
    from gpudense.flat import CHUNK_BYTES

    n = 3 * CHUNK_BYTES // 8 + 5  # float64: three chunks and a part
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(3)]
    got, _ = run(lambda m: Adam(m, lr=0.01), p0, grads)
    np.testing.assert_allclose(got, ref_adam_arrays(p0, grads, 0.01, 0.9, 0.999, 1e-8), rtol=1e-12, atol=1e-14)
    got, _ = run(lambda m: SGD(m, lr=0.1, momentum=0.9), p0, grads)
    np.testing.assert_allclose(got[:50], ref_sgd(p0[:50], [g[:50] for g in grads], 0.1, 0.9), rtol=1e-12)
    np.testing.assert_allclose(got[-50:], ref_sgd(p0[-50:], [g[-50:] for g in grads], 0.1, 0.9), rtol=1e-12)


def _is_subnormal(a):
    a = np.abs(a)
    return (a > 0) & (a < np.finfo(a.dtype).tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_first_moment_never_holds_a_subnormal_number(dtype):
    # A unit that fired once and then died: m = 0.1 * 1e-30 decays by 0.9 per step. Without the
    # flush it would pass through the subnormal range (about 150 steps in float32) before 0.
    tiny = np.finfo(dtype).tiny
    model = Params(x=np.ones(3, dtype))
    opt = Adam(model, lr=1e-3)
    first = np.array([1e-30, -1e-30, tiny], dtype)  # tiny: (1 - b1) * tiny is subnormal at once
    steps = 1000 if dtype == np.float32 else 8000
    for t in range(steps):
        model.grads["x"] = first.copy() if t == 0 else np.zeros(3, dtype)
        opt.step()
        assert not _is_subnormal(opt.state["m"]["x"]).any(), t
    assert (opt.state["m"]["x"] == 0).all()


def test_second_moment_and_parameters_are_flushed_every_flush_period_steps():
    from gpudense.optim.flatstate import FLUSH_PERIOD

    tiny = np.finfo(np.float32).tiny
    model = Params(x=np.array([tiny / 4, -tiny / 2, 1.0], np.float32))  # two subnormal parameters
    opt = Adam(model, lr=1e-3, betas=(0.9, 0.5))
    g = np.array([0.0, 0.0, 1e-19], np.float32)  # v = 0.5 * 1e-38: subnormal on the first step
    for t in range(1, 2 * FLUSH_PERIOD + 1):
        model.grads["x"] = g.copy() if t == 1 else np.zeros(3, np.float32)
        opt.step()
        if t == 1:
            assert _is_subnormal(opt.state["v"]["x"])[2]  # allowed between flushes
        if t % FLUSH_PERIOD == 0:
            assert not _is_subnormal(opt.state["v"]["x"]).any()
            assert not _is_subnormal(model.params["x"]).any()
            assert model.params["x"][:2].tolist() == [0.0, 0.0]
        elif t < FLUSH_PERIOD:
            assert model.params["x"][0] == tiny / 4  # untouched in between: the flush is periodic


def test_sgd_momentum_never_holds_a_subnormal_number():
    model = Params(x=np.zeros(2, np.float32))
    opt = SGD(model, lr=0.1, momentum=0.5)
    for t in range(300):
        model.grads["x"] = np.array([1e-20, 3e-38], np.float32) if t == 0 else np.zeros(2, np.float32)
        opt.step()
        assert not _is_subnormal(opt.state["momentum"]["x"]).any(), t
    assert (opt.state["momentum"]["x"] == 0).all()


def test_state_follows_parameters_that_appear_later():
    # the optimizer regroups when the model's parameters change; state of the others carries on
    p0 = np.linspace(-1, 1, 6)
    grads = [np.full(6, 0.1 * k) for k in range(1, 5)]
    full, _ = run(lambda m: Adam(m, lr=0.01), p0, grads)
    model = Params(x=p0.copy())
    opt = Adam(model, lr=0.01)
    for g in grads[:2]:
        model.grads["x"] = g.copy()
        opt.step()
    model.params["y"] = np.ones(3)
    model.grads["y"] = None
    for g in grads[2:]:
        model.grads = {"x": g.copy(), "y": np.ones(3)}
        opt.step()
    np.testing.assert_array_equal(model.params["x"], full)
    assert opt.param_steps == {"x": 4, "y": 2}
    np.testing.assert_allclose(model.params["y"], ref_adam(np.ones(3), [np.ones(3)] * 2, 0.01, 0.9, 0.999, 1e-8),
                               rtol=1e-12)


def test_non_contiguous_parameters_are_updated_in_place(problem):
    p0, grads = problem
    base = np.zeros((7, 2))
    model = Params(x=base[:, 0])  # a strided view
    model.params["x"][...] = p0
    opt = SGD(model, lr=0.05, momentum=0.9)
    for g in grads:
        model.grads["x"] = g.copy()
        opt.step()
    np.testing.assert_allclose(base[:, 0], ref_sgd(p0, grads, 0.05, 0.9), rtol=1e-12, atol=1e-14)
    assert (base[:, 1] == 0).all()


def test_read_only_parameters_and_repeated_names_are_refused():
    w = np.ones(3)
    w.flags.writeable = False
    model = Params(x=w)
    model.grads["x"] = np.ones(3)
    with pytest.raises(ValueError, match="parameter x is read-only"):
        Adam(model).step()

    class Twice(Params):
        def param_grads(self):
            return [ParamGrad("a", self.params["a"], self.grads["a"])] * 2

    model = Twice(a=np.ones(2))
    model.grads["a"] = np.ones(2)
    with pytest.raises(ValueError, match=r"names must be unique; \['a'\]"):
        SGD(model).step()


def test_a_refused_step_changes_nothing():
    model = Params(a=np.ones(3), b=np.ones(2), c=np.ones(4))
    opt = Adam(model, lr=0.1)
    model.grads = {"a": np.ones(3), "b": np.ones(2), "c": np.ones(4)}
    opt.step()
    before = opt.state_dict()
    params = {k: v.copy() for k, v in model.params.items()}
    model.grads = {"a": np.ones(3), "b": np.ones(2), "c": np.ones(5)}  # the last gradient does not fit
    with pytest.raises(ValueError, match="gradient of c has shape"):
        opt.step()
    for k, v in params.items():
        np.testing.assert_array_equal(model.params[k], v)  # a and b were not stepped either
    _assert_same_state(opt.state_dict(), before)
    assert opt.step_count == 1


def test_one_array_under_two_names_is_refused():
    w = np.ones(3)

    class Shared(Params):
        def param_grads(self):
            return [ParamGrad("0.w", w, np.ones(3)), ParamGrad("2.w", w, np.ones(3))]

    with pytest.raises(ValueError, match="parameters 0.w and 2.w are one array"):
        SGD(Shared(x=w))
    assert (w == 1).all()


@pytest.mark.parametrize("factory", [lambda m: Adam(m, lr=1e-3, weight_decay=0.01), lambda m: AdamW(m),
                                     lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True)])
def test_steps_split_over_threads_give_the_same_bits(factory):
    from gpudense.flat import CHUNK_BYTES

    n = 5 * CHUNK_BYTES // 4 + 7  # float32: five chunks and a part, enough for two threads
    rng = np.random.default_rng(1)
    p0, grads = rng.standard_normal(n).astype(np.float32), [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    results = []
    for threads in (1, 2, 3):
        model = Params(x=p0.copy())
        opt = factory(model)
        opt.threads = threads
        assert opt.threads == threads
        for g in grads:
            model.grads["x"] = g.copy()
            opt.step()
        results.append((model.params["x"], {s: a["x"].copy() for s, a in opt.state.items() if "x" in a}))
    for params, state in results[1:]:
        np.testing.assert_array_equal(params, results[0][0])
        for slot, a in state.items():
            np.testing.assert_array_equal(a, results[0][1][slot])


def test_threads_default_to_one_and_take_positive_ints():
    opt = Adam(Params(x=np.zeros(2)))
    assert opt.threads == 1
    for bad in (0, -1, 1.5, "2", None):
        with pytest.raises((ValueError, TypeError), match="threads"):
            opt.threads = bad
    opt.threads = 4
    assert opt.threads == 4


def test_the_flush_can_be_switched_off():
    tiny = np.finfo(np.float32).tiny
    model = Params(x=np.ones(2, np.float32))
    opt = Adam(model)
    assert opt.flush_subnormals is True
    opt.flush_subnormals = False
    model.grads["x"] = np.array([tiny, 1.0], np.float32)
    opt.step()
    assert _is_subnormal(opt.state["m"]["x"])[0]  # (1 - b1) * tiny, kept
    with pytest.raises(TypeError, match="flush_subnormals"):
        opt.flush_subnormals = 1
