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
    assert fresh.step_count == 0 and fresh.state == {"m": {}, "v": {}}  # untouched on failure


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
