"""One block instance at two positions of a network is refused; separate instances give exact gradients."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import Dense
from gpudense.losses import softmax_cross_entropy
from gpudense.nn import GELU, MLP, ReLU, Sequential, Tanh
from gpudense.optim import SGD, Adam
from reference import numeric_grad


def dense(n_in, n_out, seed):
    return Dense(n_in, n_out, dtype="float64", backend="numpy", rng=seed)


@pytest.mark.parametrize("act", [Tanh, ReLU, GELU])
def test_an_activation_instance_used_twice_is_refused_naming_both_positions(act):
    t = act()
    with pytest.raises(ValueError) as info:
        Sequential(dense(4, 5, 0), t, dense(5, 5, 1), t, dense(5, 3, 2))
    message = str(info.value)
    assert "\n" not in message
    assert f"block 3 is the same {act.__name__} instance as block 1" in message
    assert "separate instance" in message


def test_a_dense_instance_used_twice_is_refused():
    d = dense(5, 5, 0)
    with pytest.raises(ValueError, match="block 2 is the same Dense instance as block 0"):
        Sequential(d, Tanh(), d)


def test_a_block_shared_between_nested_sequentials_is_refused():
    t = Tanh()
    inner_a = Sequential(dense(4, 5, 0), t)
    inner_b = Sequential(dense(5, 3, 1), t)
    with pytest.raises(ValueError, match=r"block 1\.1 is the same Tanh instance as block 0\.1"):
        Sequential(inner_a, inner_b)
    with pytest.raises(ValueError, match="block 1 is the same Sequential instance as block 0"):
        Sequential(inner_a, inner_a)


def test_separate_instances_give_gradients_equal_to_finite_differences(rng):
    # The network the refusal points to: Tanh() at each position instead of one Tanh twice.
    d1, d2, d3 = dense(4, 5, 0), dense(5, 5, 1), dense(5, 3, 2)
    model = Sequential(d1, Tanh(), d2, Tanh(), d3)
    x = rng.standard_normal((6, 4))
    labels = rng.integers(0, 3, size=6)

    def loss():
        return float(softmax_cross_entropy(model(x), labels).loss)

    _, g = softmax_cross_entropy(model(x), labels)
    dx = model.backward(g, input_grad=True)
    for name, p, grad in model.param_grads():
        np.testing.assert_allclose(grad, numeric_grad(loss, p), rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-9, err_msg="dx")


def test_an_optimizer_refuses_a_model_that_lists_one_parameter_twice():
    d = dense(3, 3, 0)

    class Shared:
        """A hand-written model whose param_grads names one layer's arrays at two positions."""

        def param_grads(self):
            return [pg._replace(name=f"{i}.{pg.name}") for i in (0, 2) for pg in d.param_grads()]

        def zero_grad(self):
            d.zero_grad()

    for make in (Adam, SGD):
        with pytest.raises(ValueError, match="parameters 0.w and 2.w are one array"):
            make(Shared())


def test_an_optimizer_refuses_to_step_a_parameter_twice(rng):
    d = dense(3, 3, 0)
    pgs = list(d.param_grads())

    class Later:
        """Distinct parameters when the optimizer is made; one array twice by the first step."""

        shared = False

        def param_grads(self):
            if not self.shared:
                return [pg._replace(name=f"0.{pg.name}") for pg in d.param_grads()]
            return [pg._replace(name=f"{i}.{pg.name}") for i in (0, 2) for pg in d.param_grads()]

        def zero_grad(self):
            d.zero_grad()

    model = Later()
    opt = Adam(model)
    d(rng.standard_normal((2, 3)))
    d.backward(np.ones((2, 3)))
    model.shared = True
    w = d.w.copy()
    with pytest.raises(ValueError, match="parameters 0.w and 2.w are one array"):
        opt.step()
    np.testing.assert_array_equal(d.w, w)  # nothing stepped
    assert opt.step_count == 0 and pgs[0].param is d.w


def test_mlp_builds_a_separate_layer_at_each_position():
    """An MLP's hidden layers carry their activation (fused); no block is shared between positions."""
    model = MLP([4, 5, 5, 3], activation="tanh", backend="numpy", rng=0)
    layers = list(model)
    assert [layer.activation for layer in layers] == ["tanh", "tanh", None]
    assert len({id(layer) for layer in layers}) == 3
