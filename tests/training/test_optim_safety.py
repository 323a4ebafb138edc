"""Optimizers refuse what they cannot step or load, before changing anything: read-only or shared
parameters, mismatched gradients, non-finite state and negative second moments."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense.losses import softmax_cross_entropy
from gpudense.nn import MLP
from gpudense.optim import SGD, Adam, AdamW


def stepped(factory, dtype="float32", steps=2):
    model = MLP([3, 4, 2], dtype=dtype, backend="numpy", rng=0)
    opt = factory(model)
    gen = np.random.default_rng(0)
    for _ in range(steps):
        _, g = softmax_cross_entropy(model(gen.standard_normal((5, 3)).astype(dtype)), gen.integers(0, 2, 5))
        model.backward(g)
        opt.step()
        opt.zero_grad()
    _, g = softmax_cross_entropy(model(gen.standard_normal((5, 3)).astype(dtype)), gen.integers(0, 2, 5))
    model.backward(g)  # gradients ready for one more step
    return model, opt


def snapshot(model, opt):
    return ({pg.name: pg.param.copy() for pg in model.param_grads()},
            {slot: {n: a.copy() for n, a in arrays.items()} for slot, arrays in opt.state.items()},
            opt.step_count, dict(opt.param_steps))


def assert_unchanged(before, model, opt):
    params, state, count, steps = before
    for pg in model.param_grads():
        np.testing.assert_array_equal(pg.param, params[pg.name], err_msg=pg.name)
    assert {s: sorted(a) for s, a in opt.state.items()} == {s: sorted(a) for s, a in state.items()}
    for slot, arrays in state.items():
        for name, a in arrays.items():
            np.testing.assert_array_equal(opt.state[slot][name], a, err_msg=f"{slot}/{name}")
    assert (opt.step_count, opt.param_steps) == (count, steps)


@pytest.mark.parametrize("factory", [Adam, AdamW, lambda m: SGD(m, momentum=0.9)])
def test_a_read_only_parameter_is_one_clear_error_and_nothing_steps(factory):
    model, opt = stepped(factory)
    model[1].w.flags.writeable = False  # the second Dense layer, whose parameters are named 2.w, 2.b
    before = snapshot(model, opt)
    with pytest.raises(ValueError) as info:
        opt.step()
    message = str(info.value)
    assert "\n" not in message and "parameter 2.w is read-only" in message and "writable" in message
    assert_unchanged(before, model, opt)  # 0.w, 0.b come first and were not stepped either


def test_a_mismatched_gradient_is_refused_before_any_parameter_steps():
    model, opt = stepped(Adam)
    model[1].dw = model[1].dw[:, :1].copy()  # the second Dense layer (2.w)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match="gradient of 2.w has shape"):
        opt.step()
    assert_unchanged(before, model, opt)


def _poisoned(opt, slot, name, value):
    state = opt.state_dict()
    state["slots"][slot][name] = state["slots"][slot][name].copy()
    state["slots"][slot][name].flat[1] = value
    return state


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("slot", ["m", "v"])
def test_non_finite_adam_state_is_refused_naming_the_array(slot, value):
    model, opt = stepped(Adam)
    state = _poisoned(opt, slot, "0.w", value)
    fresh_model, _ = stepped(Adam)
    fresh = Adam(fresh_model)
    before = snapshot(fresh_model, fresh)
    with pytest.raises(ValueError) as info:
        fresh.load_state_dict(state)
    message = str(info.value)
    assert "\n" not in message and f"optimizer state {slot}/0.w" in message and "not finite" in message
    assert_unchanged(before, fresh_model, fresh)


def test_a_negative_second_moment_is_refused():
    model, opt = stepped(Adam)
    state = _poisoned(opt, "v", "2.b", -1e-3)
    with pytest.raises(ValueError, match=r"optimizer state v/2\.b holds a negative value \(-0\.001\)"):
        Adam(model).check_state_dict(state)


def test_non_finite_momentum_and_master_weights_are_refused():
    model, opt = stepped(lambda m: SGD(m, momentum=0.9))
    with pytest.raises(ValueError, match="optimizer state momentum/0.b .*not finite"):
        SGD(model, momentum=0.9).check_state_dict(_poisoned(opt, "momentum", "0.b", np.nan))
    model16, opt16 = stepped(Adam, dtype="float16")
    with pytest.raises(ValueError, match="optimizer state master/2.w .*not finite"):
        Adam(model16).check_state_dict(_poisoned(opt16, "master", "2.w", np.inf))


def test_a_finite_state_with_zero_second_moments_loads():
    model, opt = stepped(Adam)
    state = opt.state_dict()
    state["slots"]["v"]["0.w"][...] = 0.0  # zero is a valid second moment
    Adam(model).load_state_dict(state)


# -- an optimizer built for another model --------------------------------------------------


def test_fit_refuses_an_optimizer_of_another_model():
    from gpudense.data import make_synthetic
    from gpudense.nn import MLP
    from gpudense.optim import Adam
    from gpudense.training import TrainConfig, fit

    model, other = MLP([4, 3], backend="numpy", rng=0), MLP([4, 3], backend="numpy", rng=0)
    before = [pg.param.copy() for pg in model.param_grads()]
    with pytest.raises(ValueError, match=r"^optimizer was built for another model: the parameters it steps are "
                                         r"not this model's; build it from this model, e.g. Adam\(model\)$"):
        fit(model, Adam(other), make_synthetic(40, 4, 3, seed=0), TrainConfig(epochs=1, rng=0))
    for b, pg in zip(before, model.param_grads()):
        np.testing.assert_array_equal(b, pg.param)


def test_restore_refuses_an_optimizer_of_another_model_and_changes_nothing(tmp_path):
    from gpudense.checkpoint import load_checkpoint, save_checkpoint
    from gpudense.nn import MLP
    from gpudense.optim import Adam

    from small_models import trained

    model, opt = trained()
    save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1)
    fresh, other = MLP([4, 6, 3], backend="numpy", rng=5), MLP([4, 6, 3], backend="numpy", rng=5)
    wrong = Adam(other)
    before = [pg.param.copy() for pg in fresh.param_grads()]
    with pytest.raises(ValueError, match="optimizer was built for another model"):
        load_checkpoint(tmp_path / "c.npz").restore(fresh, wrong)
    assert wrong.step_count == 0
    for b, pg in zip(before, fresh.param_grads()):
        np.testing.assert_array_equal(b, pg.param)


def test_an_optimizer_of_another_object_over_the_same_arrays_is_accepted():
    """A wrapper listing the model's own parameter arrays under the same names steps the same model."""
    from gpudense._checks import check_optimizer_of

    from small_models import Params

    model = MLP([4, 3], backend="numpy", rng=0)
    same = Params(**{pg.name: pg.param for pg in model.param_grads()})
    check_optimizer_of(SGD(same), model)
    copies = Params(**{pg.name: pg.param.copy() for pg in model.param_grads()})
    with pytest.raises(ValueError, match="another model"):
        check_optimizer_of(SGD(copies), model)
