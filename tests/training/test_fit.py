"""Training as a library: fit, train_epoch, evaluate, to_device, History, TrainConfig, plot_history."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from gpudense.backends import get_backend
from gpudense.backends.numpy_backend import NumpyBackend
from gpudense.checkpoint import load_checkpoint, save_checkpoint
from gpudense.data import Dataset, load_digits, make_synthetic
from gpudense.nn import MLP
from gpudense.optim import SGD, Adam, make_optimizer
from gpudense.training import (
    DataOnHostWarning,
    DivergenceError,
    EpochStats,
    History,
    TrainConfig,
    evaluate,
    fit,
    to_device,
    train_epoch,
)

#: The learning rates ``gpudense train`` uses by default.
LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}


def small_run(epochs=2, seed=0, hidden=16, samples=600):
    """A synthetic set, an MLP and SGD: a run of a fraction of a second."""
    data = make_synthetic(samples, 8, 3, seed=seed)
    model = MLP([8, hidden, 3], backend="numpy", rng=seed)
    return data, model, SGD(model, lr=0.05, momentum=0.9), TrainConfig(epochs=epochs, batch_size=32, rng=seed)


# -- the job ------------------------------------------------------------------------------


@pytest.mark.digits
@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("dtype,activation", [("float64", "gelu"), ("float16", "tanh")])
def test_every_optimizer_dtype_and_activation_trains(opt, dtype, activation):
    data = load_digits(seed=0, dtype=dtype)
    model = MLP([64, 32, 10], activation=activation, dtype=dtype, backend="numpy", rng=0)
    optimizer = make_optimizer(opt, model, lr=LR[opt], **({"momentum": 0.9} if opt == "sgd" else {}))
    history = fit(model, optimizer, data, TrainConfig(epochs=2, batch_size=32, rng=0))
    assert model.dtype == np.dtype(dtype)
    assert history.loss[1] < history.loss[0]
    assert history.test_acc[-1] > 0.8


@pytest.mark.digits
def test_profile_opens_nvtx_ranges_through_the_backend(nvtx_ranges):
    names = nvtx_ranges
    data = load_digits(seed=0)
    model = MLP([64, 8, 10], backend="numpy", rng=0)
    fit(model, Adam(model), data, TrainConfig(epochs=2, batch_size=512, rng=0, profile=True))
    assert names.count("gpudense.train.epoch") == 2
    assert names.count("gpudense.train.step") == 2 * 3  # ceil(1438 / 512) steps per epoch
    names.clear()
    fit(model, Adam(model), data, TrainConfig(epochs=1, batch_size=512, rng=0))
    assert "gpudense.train.step" not in names  # no ranges without profile


def test_callbacks_report_every_batch_and_epoch():
    data, model, opt, config = small_run(epochs=3)
    n = data.x_train.shape[0]  # 480: 15 batches of 32
    batches, epochs = [], []

    def on_batch(epoch, step, seen, loss_sum, correct):
        batches.append((epoch, step, seen, float(loss_sum), int(correct)))

    def on_epoch(stats, history):
        epochs.append((stats, len(history.loss)))

    history = fit(model, opt, data, config, start_epoch=1, history=History([9.0], [0.1], [0.2], [1.0]),
                  on_epoch=on_epoch, on_batch=on_batch)
    assert [b[0] for b in batches] == [2] * 15 + [3] * 15
    assert [b[1] for b in batches[:15]] == list(range(15))
    assert [b[2] for b in batches[:15]] == [min(32 * k, n) for k in range(1, 16)]
    assert [(s.epoch, s.epochs, s.samples, length) for s, length in epochs] == [(2, 3, n, 2), (3, 3, n, 3)]
    for (stats, _), last in zip(epochs, [batches[14], batches[29]]):  # each epoch's last batch
        assert stats.loss == last[3] / n and stats.train_acc == last[4] / n
        assert isinstance(stats, EpochStats) and stats.seconds > 0
    assert history.loss[0] == 9.0 and history.loss[1:] == [s.loss for s, _ in epochs]
    assert history.test_acc[1:] == [s.test_acc for s, _ in epochs]


def test_the_given_history_is_not_changed():
    data, model, opt, config = small_run(epochs=2)
    given = History([1.0], [0.5], [0.5], [0.1])
    history = fit(model, opt, data, config, start_epoch=1, history=given)
    assert given == History([1.0], [0.5], [0.5], [0.1])
    assert len(history.loss) == 2 and history.loss[0] == 1.0


def test_nothing_runs_when_start_epoch_reaches_epochs():
    data, model, opt, config = small_run(epochs=2)
    before = model.state_dict()
    called = []
    history = fit(model, opt, data, config, start_epoch=2, history=History([1.0, 0.5]),
                  on_epoch=lambda *a: called.append(a), on_batch=lambda *a: called.append(a))
    assert history.loss == [1.0, 0.5] and not called and opt.step_count == 0
    for name, a in model.state_dict().items():
        np.testing.assert_array_equal(a, before[name])


def test_a_diverging_run_stops_naming_the_epoch():
    data, model, _, config = small_run(epochs=3)
    opt = SGD(model, lr=1e30)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's overflow warnings are silenced inside fit
        with pytest.raises(DivergenceError) as info:
            fit(model, opt, data, config, on_epoch=lambda stats, history: seen.append(stats.epoch))
    assert str(info.value) == ("training diverged in epoch 1: the mean loss is nan; "
                               "try a lower learning rate (this run used 1e+30)")
    assert info.value.epoch == 1 and math.isnan(info.value.loss) and info.value.lr == 1e30
    assert isinstance(info.value, RuntimeError)
    assert seen == []  # stopped before on_epoch: a checkpoint saved there never holds a diverged model


def test_fit_through_checkpoints_resumes_exactly(tmp_path):
    def setup():
        data, model, opt, _ = small_run(epochs=4, seed=3)
        return data, model, opt, np.random.default_rng(11)

    data, full_model, opt, rng = setup()
    full = fit(full_model, opt, data, TrainConfig(epochs=4, batch_size=64, rng=rng))

    path = tmp_path / "run.npz"
    data, model, opt, rng = setup()

    def save(stats, history):
        save_checkpoint(path, model, opt, epoch=stats.epoch, rng=rng, extra={"history": history.as_dict()})

    fit(model, opt, data, TrainConfig(epochs=2, batch_size=64, rng=rng), on_epoch=save)
    data, model2, opt2, rng2 = setup()
    ckpt = load_checkpoint(path)
    ckpt.restore(model2, opt2, rng2)
    resumed = fit(model2, opt2, data, TrainConfig(epochs=4, batch_size=64, rng=rng2),
                  start_epoch=ckpt.epoch, history=History.from_dict(ckpt.extra["history"]))
    assert resumed.loss == full.loss and resumed.train_acc == full.train_acc and resumed.test_acc == full.test_acc
    for a, b in zip(full_model.param_grads(), model2.param_grads()):
        np.testing.assert_array_equal(a.param, b.param)


def test_a_seed_gives_the_same_run():
    runs = []
    for _ in range(2):
        data, model, opt, config = small_run(epochs=2, seed=5)
        runs.append(fit(model, opt, data, config))
    assert runs[0].loss == runs[1].loss



# -- bad arguments ------------------------------------------------------------------------


def test_bad_arguments_are_clear_errors():
    data, model, opt, config = small_run()
    with pytest.raises(TypeError, match="config must be a TrainConfig; got dict"):
        fit(model, opt, data, {"epochs": 1})
    with pytest.raises(ValueError, match="start_epoch must be an int >= 0; got -1"):
        fit(model, opt, data, config, start_epoch=-1)
    with pytest.raises(TypeError, match="history must be a History or None; got dict"):
        fit(model, opt, data, config, history={"loss": []})
    bad_labels = Dataset("bad", data.x_train, data.y_train + 3, data.x_test, data.y_test, n_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        fit(model, opt, bad_labels, config)
    empty = Dataset("empty", data.x_train[:0], data.y_train[:0], data.x_test, data.y_test, n_classes=3)
    with pytest.raises(ValueError, match="data has no training samples"):
        fit(model, opt, empty, config)
    listed = Dataset("lists", data.x_train.tolist(), data.y_train, data.x_test, data.y_test, n_classes=3)
    with pytest.raises(TypeError, match="expected a numpy.ndarray or cupy.ndarray"):
        fit(model, opt, listed, config)
    assert opt.step_count == 0  # nothing trained


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"epochs": -1}, ValueError, "epochs must be an int >= 0; got -1"),
        ({"epochs": 2.0}, ValueError, "epochs must be an int >= 0; got 2.0"),
        ({"epochs": 1, "batch_size": 0}, ValueError, "batch_size must be an int >= 1; got 0"),
        ({"epochs": 1, "rng": "seed"}, TypeError, "rng must be a numpy.random.Generator, an int seed or None"),
        ({"epochs": 1, "rng": -3}, ValueError, "rng must be a seed >= 0"),
        ({"epochs": 1, "profile": 1}, TypeError, "profile must be True or False; got 1"),
    ],
)
def test_train_config_checks_its_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


# -- the pieces ---------------------------------------------------------------------------


def test_evaluate_counts_argmax_hits():
    model = MLP([2, 2], backend="numpy", rng=0)
    model.load_state_dict({"0.w": np.eye(2, dtype=np.float32), "0.b": np.zeros(2, np.float32)})  # scores = x
    x = np.array([[1, 0], [0, 1], [2, 1], [0, 3], [5, 4]], np.float32)  # argmax 0, 1, 0, 1, 0
    y = np.array([0, 1, 1, 1, 0])
    assert evaluate(model, x, y) == 0.8
    assert evaluate(model, x, y, batch_size=2) == 0.8  # three batches, the last of one sample
    with pytest.raises(ValueError, match=r"^evaluate needs a non-empty set \(the accuracy of nothing is "
                                         r"undefined\); got x of shape \(0, 2\)$"):
        evaluate(model, x[:0], y[:0])


def test_train_epoch_visits_the_order_in_batches():
    model = MLP([3, 4, 2], backend="numpy", rng=0)
    gen = np.random.default_rng(0)
    x = gen.standard_normal((5, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1])
    calls = []
    loss_sum, correct = train_epoch(model, SGD(model, lr=0.1), x, y, np.array([4, 3, 2, 1, 0]), batch_size=2,
                                    on_batch=lambda step, seen, ls, c: calls.append((step, seen)))
    assert calls == [(0, 2), (1, 4), (2, 5)]
    assert loss_sum.shape == () and loss_sum.dtype == np.float64 and float(loss_sum) > 0
    assert 0 <= int(correct) <= 5


def test_to_device_keeps_a_part_that_does_not_fit_on_the_host(monkeypatch):
    data = make_synthetic(100, 4, 2, seed=0)
    real = NumpyBackend.asarray

    def no_room_for_the_training_set(self, a, dtype=None):
        if a is data.x_train:
            raise MemoryError("out of device memory")
        return real(self, a, dtype)

    monkeypatch.setattr(NumpyBackend, "asarray", no_room_for_the_training_set)
    with pytest.warns(DataOnHostWarning, match="the train set .* does not fit on the device") as record:
        placed = to_device(data, get_backend("numpy"))
    assert [w.message.part for w in record] == ["train"]
    assert placed.x_train is data.x_train and placed.y_train is data.y_train
    assert placed.name == data.name and placed.n_classes == data.n_classes


def test_history_round_trips_and_refuses_what_is_not_one():
    h = History([1.0, 0.5], [0.6, 0.8], [0.7, 0.9], [0.1, 0.2])
    assert History.from_dict(h.as_dict()) == h
    assert History.from_dict({"loss": [1, 2]}) == History([1.0, 2.0])
    for bad in ([0.5], {"loss": 0.5}, {"loss": ["0.5"]}, {"loss": [True]}):
        with pytest.raises(ValueError, match="a history must map names to lists of numbers"):
            History.from_dict(bad)
    with pytest.raises(ValueError, match="one entry per epoch in every list; got loss 2, test_acc 1"):
        History.from_dict({"loss": [1.0, 2.0], "test_acc": [0.5]})


def test_plot_history_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="plot_history needs matplotlib")
    from gpudense.plotting import plot_history

    path = tmp_path / "curves.png"
    plot_history(History([1.0, 0.5, 0.25], [0.5, 0.7, 0.8], [0.6, 0.7, 0.75], [0.1] * 3), str(path), title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
