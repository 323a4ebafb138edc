"""``fit(..., comm=...)`` in one process: the data-parallel path, the set-up fingerprint and its checks.

Several real ranks are tested in test_mpiexec.py; here a world of one must
give exactly the results of plain single-process training.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gpudense.data import make_synthetic
from gpudense.distributed import LocalCommunicator, MismatchError
from gpudense.distributed.parallel import DataParallel, check_same_setup, fingerprint
from gpudense.nn import MLP
from gpudense.optim import Adam, SGD
from gpudense.training import TrainConfig, fit


def load_fakes():
    spec = importlib.util.spec_from_file_location("fakes", Path(__file__).with_name("fakes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _setup(dtype="float32", optimizer=Adam, **config):
    data = make_synthetic(230, 6, 3, seed=1, dtype=dtype)
    model = MLP([6, 12, 3], dtype=dtype, backend="numpy", rng=2)
    return model, optimizer(model, lr=0.01), data, TrainConfig(**{"epochs": 3, "batch_size": 20, "rng": 3, **config})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", [Adam, SGD])
def test_a_world_of_one_trains_exactly_as_one_process(dtype, optimizer):
    runs = []
    for comm in (None, LocalCommunicator()):
        model, opt, data, config = _setup(dtype, optimizer)
        steps = []
        history = fit(model, opt, data, config, comm=comm,
                      on_batch=lambda e, s, seen, loss, correct: steps.append((e, s, seen, float(loss), int(correct))))
        runs.append((history, model.state_dict(), steps))
    (h1, p1, s1), (h2, p2, s2) = runs
    assert h1.loss == h2.loss and h1.train_acc == h2.train_acc and h1.test_acc == h2.test_acc
    assert s1 == s2
    for name in p1:
        np.testing.assert_array_equal(p1[name], p2[name])


def test_on_batch_counts_the_samples_of_all_ranks():
    model, opt, data, config = _setup(batch_size=64)
    seen = []
    fit(model, opt, data, dataclasses.replace(config, epochs=1), comm=load_fakes().Mirror(size=2),
        on_batch=lambda e, s, n, loss, correct: seen.append(n))
    assert seen == [64, 128, 184]  # 184 training samples: the global batches, not this rank's rows


def test_comm_must_be_a_communicator():
    model, opt, data, config = _setup()
    with pytest.raises(TypeError, match="comm must be a gpudense.distributed.Communicator; got str"):
        fit(model, opt, data, config, comm="mpi")


def test_an_engine_must_take_the_models_arrays():
    fakes = load_fakes()

    class GpuOnly(fakes.Mirror):
        kind = "nccl"
        array_kinds = ("cupy",)

    model, opt, data, config = _setup()
    with pytest.raises(TypeError, match="the nccl communicator takes cupy arrays; the model is on the numpy backend"):
        fit(model, opt, data, config, comm=GpuOnly())


def _fp(**changes):
    model, opt, data, config = _setup(**changes)
    return fingerprint(model, opt, data, config, np.random.default_rng(config.rng), 0)


def test_fingerprint_holds_the_setup():
    fp = _fp()
    assert fp["backend"] == "numpy"
    assert fp["model"] == {"sizes": [6, 12, 3], "activation": "relu", "bias": True, "dtype": "float32"}
    assert fp["parameters.2.w"] == [[12, 3], "float32"]
    assert fp["optimizer.type"] == "Adam" and fp["optimizer.hyperparams.lr"] == 0.01
    assert fp["training.batch_size"] == 20 and fp["training.epochs"] == 3
    assert fp["data.x_train"] == [[184, 6], "float32"]
    assert fp == _fp()  # the same set-up, the same fingerprint


@pytest.mark.parametrize("key, change", [
    ("training.batch_size", {"batch_size": 21}),
    ("training.epochs", {"epochs": 4}),
    ("shuffle", {"rng": 4}),
    ("data.x_train", {"dtype": "float64"}),
])
def test_fingerprint_sees_a_different_setup(key, change):
    assert _fp()[key] != _fp(**change)[key]


def test_matching_ranks_pass():
    fp = _fp()
    check_same_setup(load_fakes().Mirror(size=3, objects=[fp, fp, fp]), fp)


def test_a_mismatch_names_the_key_both_values_and_the_rank():
    fp = _fp()
    other = dict(fp, **{"optimizer.hyperparams.lr": 0.02})
    with pytest.raises(MismatchError, match=r"optimizer.hyperparams.lr is 0.01 on rank 0 but 0.02 on rank 2$"):
        check_same_setup(load_fakes().Mirror(size=3, objects=[fp, fp, other]), fp)


def test_a_different_shuffle_says_to_give_the_same_seed():
    fp = _fp()
    with pytest.raises(MismatchError, match="give every rank the same seed"):
        check_same_setup(load_fakes().Mirror(size=2, objects=[fp, _fp(rng=5)]), fp)


def test_fit_checks_the_setup_before_training():
    model, opt, data, config = _setup()
    fp = fingerprint(model, opt, data, config, np.random.default_rng(config.rng), 0)
    other = dict(fp, **{"training.batch_size": 99})
    before = model.state_dict()
    with pytest.raises(MismatchError, match="training.batch_size is 20 on rank 0 but 99 on rank 1"):
        fit(model, opt, data, config, comm=load_fakes().Mirror(size=2, objects=[fp, other]))
    for name, p in model.state_dict().items():
        np.testing.assert_array_equal(p, before[name])  # nothing trained


def test_data_parallel_broadcasts_parameters_and_optimizer_state():
    model, opt, data, config = _setup()
    fit(model, opt, data, dataclasses.replace(config, epochs=1))  # the optimizer now has state
    comm = load_fakes().Mirror(size=2)
    DataParallel(model, opt, comm, data=data, config=config, shuffle=np.random.default_rng(0))
    state = [a for slot in sorted(opt.state) for _, a in sorted(opt.state[slot].items())]
    assert len(state) == 8  # m and v of four parameters
    assert len(comm.seen) == 1 + len(state)  # one bucket of parameters, then each state array
    assert all(seen is a for seen, a in zip(comm.seen[1:], state))


def test_the_training_loop_imports_nothing_of_the_distributed_package():
    """One loop: data parallelism reaches it as hooks (DataParallel), never through an import."""
    import ast

    import gpudense.training

    tree = ast.parse(Path(gpudense.training.__file__).read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert imported and not [name for name in imported if name and name.startswith("gpudense.distributed")]


def test_fit_with_a_two_rank_world_takes_this_ranks_rows_and_sums_over_the_ranks():
    """Rank 1 of a mirrored world of 2 reads its half of each batch and of the test set."""
    model, opt, data, config = _setup(batch_size=64)
    seen_rows = []
    real_call = type(model).__call__

    def recording_call(self, x):
        seen_rows.append(int(x.shape[0]))
        return real_call(self, x)

    type(model).__call__ = recording_call
    try:
        history = fit(model, opt, data, dataclasses.replace(config, epochs=1),
                      comm=load_fakes().Mirror(size=2, rank=1))
    finally:
        type(model).__call__ = real_call
    n_train = data.x_train.shape[0]
    train_steps = -(-n_train // 64)
    assert seen_rows[:train_steps] == [32] * (n_train // 64) + [n_train % 64 - (n_train % 64 + 1) // 2]
    n_test = data.x_test.shape[0]
    assert seen_rows[train_steps:] == [n_test - (n_test + 1) // 2]  # evaluation: rank 1's rows of the test set
    assert len(history.loss) == 1
