"""Arguments refused with a message that names them and states the rule as it is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpudense.checkpoint import load_checkpoint, save_checkpoint
from gpudense.data import Dataset, load_digits, make_synthetic
from gpudense.nn import MLP
from gpudense.optim import SGD, Adam
from gpudense.training import TrainConfig, fit


@pytest.mark.parametrize("seed", [-1, 1.5, "3"])
def test_a_bad_seed_is_named(seed):
    with pytest.raises((ValueError, TypeError), match=rf"^seed must be an int >= 0; got {seed!r}$"):
        make_synthetic(10, 2, 2, seed=seed)


def test_load_digits_names_a_negative_seed():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match=r"^seed must be an int >= 0; got -1$"):
        load_digits(seed=-1)


@pytest.mark.parametrize("value", [np.inf, 0.0, -1.0])
def test_lr_states_its_interval_as_it_is(value):
    model = MLP([2, 2], backend="numpy", rng=0)
    with pytest.raises(ValueError, match=rf"^lr must lie in \(0\.0, inf\); got {value!r}$"):
        Adam(model, lr=value)


def test_sgd_repr_shows_nesterov_as_a_bool():
    model = MLP([2, 2], backend="numpy", rng=0)
    assert repr(SGD(model, lr=0.1, momentum=0.9, nesterov=True)) == \
        "SGD(lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=True)"
    assert repr(SGD(model, lr=0.1)).endswith("nesterov=False)")


@pytest.mark.parametrize("extra,kind,match", [
    ({"x": np.float32(1.0)}, TypeError, "Object of type float32 is not JSON serializable"),
    ({"x": object()}, TypeError, "Object of type object"),
    ({"x": float("nan")}, ValueError, "Out of range float values"),
    ({(1, 2): 3}, TypeError, "keys must be"),
    ([1, 2], TypeError, "^extra must be a dict of JSON data or None; got list$"),
])
def test_save_checkpoint_names_extra_that_json_cannot_hold(tmp_path, extra, kind, match):
    model = MLP([2, 2], backend="numpy", rng=0)
    with pytest.raises(kind, match=match) as info:
        save_checkpoint(tmp_path / "c.npz", model, epoch=0, extra=extra)
    assert str(info.value).startswith("extra must")
    assert not list(tmp_path.iterdir())


def test_save_checkpoint_keeps_json_extra(tmp_path):
    model = MLP([2, 2], backend="numpy", rng=0)
    extra = {"note": "hi", "list": [1, 2.5, None, True], "nested": {"a": "b"}}
    save_checkpoint(tmp_path / "c.npz", model, epoch=0, extra=extra)
    assert load_checkpoint(tmp_path / "c.npz").extra == json.loads(json.dumps(extra))


def test_fit_refuses_data_without_a_test_set_before_training():
    model = MLP([2, 2], backend="numpy", rng=0)
    before = [pg.param.copy() for pg in model.param_grads()]
    x, y = np.ones((8, 2), np.float32), np.array([0, 1] * 4)
    data = Dataset("no test", x, y, x[:0], y[:0], n_classes=2)
    with pytest.raises(ValueError, match="^data has no test samples"):
        fit(model, Adam(model), data, TrainConfig(epochs=1, rng=0))
    for b, pg in zip(before, model.param_grads()):
        np.testing.assert_array_equal(b, pg.param)
