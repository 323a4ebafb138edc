"""Arrays changed in place between forward and backward: the rule, and the opt-in check that raises."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gpudense.layer import Dense
from gpudense.nn import GELU, MLP, ReLU, Tanh
from gpudense.saved import check_saved, checking_saved


@pytest.fixture
def checking():
    previous = check_saved(True)
    yield
    check_saved(previous)


@pytest.fixture
def not_checking():
    previous = check_saved(False)
    yield
    check_saved(previous)


def test_without_the_check_backward_reads_the_changed_input(not_checking):
    # the rule: the backward pass reads what the forward pass saved as it is when backward runs
    layer = Dense(3, 2, backend="numpy", rng=0)
    x = np.ones((4, 3), np.float32)
    dy = np.ones((4, 2), np.float32)
    layer(x)
    x[:] = 5.0
    layer.backward(dy)
    np.testing.assert_array_equal(layer.dw, np.full((3, 2), 20.0, np.float32))  # x.T @ dy of the new x


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "tanh"])
def test_a_changed_input_is_refused_naming_it(checking, activation):
    layer = Dense(3, 2, activation=activation, backend="numpy", rng=0)
    x = np.ones((4, 3), np.float32)
    y = layer(x)
    x[1, 2] = 7.0  # one element is enough: the copy is compared bit for bit
    with pytest.raises(RuntimeError, match="Dense.backward: its input x was changed in place after the forward"):
        layer.backward(np.ones_like(y))
    assert layer.dw is None  # nothing was computed


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_a_changed_output_that_the_backward_pass_reads_is_refused(checking, activation):
    layer = Dense(3, 2, activation=activation, backend="numpy", rng=0)
    y = layer(np.ones((4, 3), np.float32))
    y *= 2.0  # relu and tanh save their output: the caller's y
    with pytest.raises(RuntimeError, match=f"its output \\(what {activation} saves\\) was changed"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("block,what", [(ReLU, "its output y"), (Tanh, "its output y"), (GELU, "its input x")])
def test_activation_blocks_refuse_a_changed_saved_array(checking, block, what):
    act = block()
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    y = act(x)
    (x if what == "its input x" else y)[0, 0] += 1.0
    with pytest.raises(RuntimeError, match=f"{block.__name__}.backward: {what} was changed in place"):
        act.backward(np.ones_like(y))


def test_unchanged_arrays_pass_the_check_and_nan_equals_nan(checking):
    model = MLP([3, 5, 2], backend="numpy", rng=0)
    x = np.ones((4, 3), np.float32)
    x[0, 0] = np.nan  # compared as bits: NaN is equal to itself
    y = model(x)
    model.backward(np.ones_like(y))
    a = np.arange(12, dtype=np.float32).reshape(4, 3)[:, ::2]  # not contiguous
    layer = Dense(2, 2, backend="numpy", rng=0)
    layer.backward(np.ones_like(layer(a)))


def test_a_copy_given_to_forward_is_the_way_to_change_x_early(checking):
    layer = Dense(3, 2, backend="numpy", rng=0)
    x = np.ones((4, 3), np.float32)
    y = layer(x.copy())
    x[:] = 5.0  # the caller's array is free
    layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(layer.dw, np.full((3, 2), 4.0, np.float32))


def test_check_saved_takes_a_bool_and_returns_the_previous_setting():
    previous = check_saved(True)
    try:
        assert checking_saved() is True
        assert check_saved(False) is True and checking_saved() is False
        with pytest.raises(TypeError, match="enabled must be True or False"):
            check_saved(1)
    finally:
        check_saved(previous)


def test_the_environment_switches_the_check_on():
    code = "import gpudense.saved as s; print(s.checking_saved())"
    for value, want in (("1", "True"), ("0", "False"), ("", "False"), ("false", "False"), ("No", "False"),
                        ("OFF", "False"), ("true", "True"), ("Yes", "True"), (" on ", "True")):
        env = {**os.environ, "GPUDENSE_CHECK_SAVED": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == want, value


def test_the_environment_is_read_when_first_needed_not_at_import(monkeypatch):
    code = ("import os, gpudense.saved as s; os.environ['GPUDENSE_CHECK_SAVED'] = '1'; print(s.checking_saved())")
    env = {k: v for k, v in os.environ.items() if k != "GPUDENSE_CHECK_SAVED"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_a_value_that_is_no_boolean_is_an_error_naming_the_variable():
    code = "import gpudense.saved as s; s.checking_saved()"
    env = {**os.environ, "GPUDENSE_CHECK_SAVED": "maybe"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert ("ValueError: GPUDENSE_CHECK_SAVED='maybe' in the environment: expected 1, true, yes or on (on), "
            "or 0, false, no, off or empty (off)") in out.stderr
