"""``gpudense train``: the digits run, its options, its output, its one-line errors and exit codes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from gpudense.backends.numpy_backend import NumpyBackend
from gpudense.cli import train as train_command
from gpudense.cli.train import parse_args, train

from cli_run import run_cli

FAST = ["--backend", "numpy", "--quiet"]


# -- the job ------------------------------------------------------------------------------


@pytest.mark.digits
def test_digits_run_reaches_accuracy(capsys):
    status, out, err = run_cli(["train", *FAST, "--epochs", "6"], capsys)
    assert status == 0, err
    lines = out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch")]
    assert len(epochs) == 6 and all("loss" in e and "test acc" in e for e in epochs)
    assert lines[-1].startswith("test accuracy: ")
    assert float(lines[-1].split(":")[1]) >= 0.96
    assert "1438 train / 359 test" in out


@pytest.mark.digits
def test_output_without_a_terminal_has_no_progress_bar():
    env = {**os.environ, "GPUDENSE_BACKEND": "numpy"}
    proc = subprocess.run(
        [sys.executable, "-m", "gpudense", "train", "--epochs", "1", "--hidden", "16"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout and "\r" not in proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("test accuracy: 0.")


def test_synthetic_dataset_run(capsys):
    argv = ["train", *FAST, "--dataset", "synthetic", "--samples", "3000", "--features", "20",
            "--classes", "4", "--epochs", "2", "--hidden", "32,32", "--optimizer", "sgd"]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    assert "2400 train / 600 test samples, 20 features, 4 classes" in out
    assert float(out.splitlines()[-1].split(":")[1]) > 0.5  # well above the 0.25 of chance


@pytest.mark.digits
def test_model_and_optimizer_options_reach_the_run():
    # every optimizer, dtype and activation trains: tests/training/test_fit.py
    args = parse_args([*FAST, "--epochs", "1", "--hidden", "16,8", "--optimizer", "adamw", "--dtype", "float16",
                       "--activation", "tanh", "--weight-decay", "0.05", "--lr", "0.004", "--batch-size", "64"])
    result = train(args, out=io.StringIO())
    assert result.model.config() == {"sizes": [64, 16, 8, 10], "activation": "tanh", "bias": True,
                                     "dtype": "float16"}
    assert type(result.optimizer).__name__ == "AdamW"
    assert (result.optimizer.lr, result.optimizer.hyperparams["weight_decay"]) == (0.004, 0.05)
    assert result.optimizer.step_count == 23  # ceil(1438 / 64) steps
    assert len(result.history.loss) == 1 and result.test_accuracy == result.history.test_acc[-1]


@pytest.mark.digits
def test_zero_epochs_only_evaluates(capsys):
    status, out, _ = run_cli(["train", *FAST, "--epochs", "0"], capsys)
    assert status == 0
    assert "--epochs 0: no training; evaluating the initial model" in out
    assert "checkpoint" not in out and "nothing to train" not in out  # there is no checkpoint
    assert out.splitlines()[-1].startswith("test accuracy: ")


@pytest.mark.digits
def test_diverging_run_stops_with_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "c.npz"
    argv = ["train", *FAST, "--epochs", "3", "--hidden", "16", "--optimizer", "sgd", "--lr", "1e30"]
    status, out, err = run_cli([*argv, "--save", str(path)], capsys)
    assert status == 1
    assert err == ("gpudense train: error: training diverged in epoch 1: the mean loss is nan; "
                   "try a lower --lr (this run used 1e+30)\n")
    assert "test accuracy" not in out and not path.exists()  # no checkpoint of a diverged model


@pytest.mark.digits
def test_profile_opens_nvtx_ranges_through_the_backend(nvtx_ranges):
    # the counts per epoch and step: tests/training/test_fit.py
    names = nvtx_ranges
    train(parse_args([*FAST, "--epochs", "2", "--hidden", "8", "--batch-size", "512", "--profile"]), out=io.StringIO())
    assert names.count("gpudense.train.epoch") == 2
    assert names.count("gpudense.train.step") == 2 * 3  # ceil(1438 / 512) steps per epoch
    names.clear()
    train(parse_args([*FAST, "--epochs", "1", "--hidden", "8", "--batch-size", "512"]), out=io.StringIO())
    assert "gpudense.train.step" not in names  # no ranges without --profile


@pytest.mark.digits
def test_plot_writes_a_png(tmp_path, capsys):
    path = tmp_path / "curves.png"
    status, out, err = run_cli(["train", *FAST, "--epochs", "2", "--hidden", "16", "--plot", str(path)], capsys)
    assert status == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {path}" in out


@pytest.mark.digits
def test_save_then_resume_continues_the_epoch_count(tmp_path, capsys):
    path = str(tmp_path / "c.npz")
    assert run_cli(["train", *FAST, "--epochs", "1", "--hidden", "16", "--save", path], capsys)[0] == 0
    status, out, err = run_cli(["train", *FAST, "--epochs", "2", "--hidden", "16", "--resume", path], capsys)
    assert status == 0, err
    assert "resumed from" in out and "epoch   2/2" in out and "epoch   1/2" not in out
    status, out, _ = run_cli(["train", *FAST, "--epochs", "1", "--hidden", "16", "--resume", path], capsys)
    assert status == 0 and "checkpoint is at epoch 1, --epochs is 1: nothing to train; evaluating it" in out


# -- bad options: a one-line error, a non-zero exit, no traceback ------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--epochs", "-1"], "argument --epochs: expected an integer >= 0; got '-1'"),
        (["--epochs", "two"], "argument --epochs: expected an integer"),
        (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1; got '0'"),
        (["--hidden", "64,x"], "argument --hidden: expected comma-separated positive layer sizes"),
        (["--hidden", "64,0"], "argument --hidden: expected comma-separated positive layer sizes"),
        (["--lr", "-0.1"], "argument --lr: expected a positive number; got '-0.1'"),
        (["--lr", "nan"], "argument --lr: expected a positive number; got 'nan'"),
        (["--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
        (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
        (["--backend", "tpu"], "argument --backend: invalid choice"),
        (["--samples", "1"], "argument --samples: expected an integer >= 2; got '1'"),
    ],
)
def test_bad_options_are_one_line_argparse_errors(argv, message, capsys):
    status, out, err = run_cli(["train", *argv], capsys)
    assert status == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage: gpudense train [options]") and len(lines) == 2
    assert message in lines[1]


@pytest.mark.digits
def test_bad_runs_are_one_line_errors(tmp_path, capsys):
    good = str(tmp_path / "good.npz")
    assert run_cli(["train", *FAST, "--epochs", "1", "--hidden", "16", "--save", good], capsys)[0] == 0
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint at all")
    cases = [
        (["--resume", str(tmp_path / "missing.npz")], "does not exist"),
        (["--resume", str(garbage)], "truncated or corrupt"),
        (["--resume", good, "--hidden", "32"], "sizes=[64, 16, 10]; this model has sizes=[64, 32, 10]"),
        (["--resume", good, "--hidden", "16", "--optimizer", "sgd"],
         f"--optimizer sgd conflicts with checkpoint {good}, whose optimizer is adam; omit --optimizer"),
        (["--resume", good, "--hidden", "16", "--dtype", "float64"], "dtype='float32'"),
        (["--resume", good, "--hidden", "16", "--seed", "1"], "was trained on {'dataset': 'digits', 'seed': 0}"),
        (["--save", str(tmp_path / "nodir" / "c.npz")], "does not exist"),
        (["--save", str(tmp_path)], "is a directory"),
        (["--plot", str(tmp_path / "nodir" / "p.png")], "does not exist"),
    ]
    for argv, message in cases:
        status, out, err = run_cli(["train", *FAST, "--epochs", "1", *argv], capsys)
        assert status == 1, (argv, err)
        assert err.count("\n") == 1 and err.startswith("gpudense train: error: "), err
        assert message in err, (argv, err)


@pytest.mark.digits
def test_resume_options_that_conflict_with_the_checkpoint_are_errors(tmp_path, capsys):
    sgd = str(tmp_path / "sgd.npz")
    common = [*FAST, "--hidden", "16"]
    assert run_cli(["train", *common, "--epochs", "1", "--optimizer", "sgd", "--momentum", "0.5",
                    "--weight-decay", "0.001", "--batch-size", "64", "--save", sgd], capsys)[0] == 0
    cases = [
        (["--weight-decay", "0.01"], "--weight-decay 0.01 conflicts with checkpoint {}, whose weight_decay is 0.001"),
        (["--momentum", "0.9"], "--momentum 0.9 conflicts with checkpoint {}, whose momentum is 0.5"),
        (["--batch-size", "32"], "--batch-size 32 conflicts with checkpoint {}, whose batch size is 64"),
        (["--optimizer", "adamw"], "--optimizer adamw conflicts with checkpoint {}, whose optimizer is sgd"),
    ]
    for argv, message in cases:
        status, out, err = run_cli(["train", *common, "--epochs", "2", "--resume", sgd, *argv], capsys)
        assert status == 1, (argv, err)
        assert err == f"gpudense train: error: {message.format(sgd)}; omit {argv[0]} to continue with " \
                      "the checkpoint's value\n"
    # options left out continue with the checkpoint's values; equal ones are accepted; --lr is applied
    result = train(parse_args([*common, "--epochs", "2", "--resume", sgd, "--momentum", "0.5", "--lr", "0.01"]),
                 out=io.StringIO())
    h = result.optimizer.hyperparams
    assert (h["momentum"], h["weight_decay"], h["lr"]) == (0.5, 0.001, 0.01)
    assert type(result.optimizer).__name__ == "SGD" and len(result.history.loss) == 2
    status, out, err = run_cli(["train", *common, "--epochs", "2", "--resume", sgd], capsys)
    assert status == 0 and "batch size 64" in out, err


@pytest.mark.digits
def test_resume_with_a_malformed_history_is_a_one_line_error(tmp_path, capsys):
    from gpudense.checkpoint import load_checkpoint, save_checkpoint

    good = str(tmp_path / "good.npz")
    assert run_cli(["train", *FAST, "--epochs", "1", "--hidden", "16", "--save", good], capsys)[0] == 0
    ckpt = load_checkpoint(good)
    result = train(parse_args([*FAST, "--epochs", "0", "--hidden", "16"]), out=io.StringIO())
    bad = str(tmp_path / "bad.npz")
    save_checkpoint(bad, result.model, result.optimizer, epoch=1, rng=np.random.default_rng(0),
                    extra={**ckpt.extra, "history": [0.5]})
    status, _, err = run_cli(["train", *FAST, "--epochs", "2", "--hidden", "16", "--resume", bad], capsys)
    assert status == 1 and err.count("\n") == 1
    assert "extra 'history' must map names to lists of numbers" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "digits"], "--data is the training set; --dataset would be ignored beside it"),
        (["--dataset", "synthetic", "--classes", "3"],
         "--data is the training set; --dataset, --classes would be ignored beside it"),
        (["--samples", "500"], "--data is the training set; --samples would be ignored beside it"),
    ],
)
def test_data_beside_another_data_source_is_an_error(tmp_path, argv, message, capsys):
    data = tmp_path / "data.npz"
    np.savez(data, x=np.zeros((20, 4), np.float32), y=np.arange(20) % 2)
    status, out, err = run_cli(["train", *FAST, "--data", str(data), *argv], capsys)
    assert status == 1 and out == ""
    assert err == f"gpudense train: error: {message}: give one or the other\n"


def test_synthetic_sizes_without_the_synthetic_set_are_an_error(capsys):
    status, out, err = run_cli(["train", *FAST, "--features", "20"], capsys)
    assert status == 1
    assert err == "gpudense train: error: --features shape --dataset synthetic only; this run uses digits\n"


def test_momentum_without_sgd_is_an_error(capsys):
    status, _, err = run_cli(["train", *FAST, "--epochs", "1", "--momentum", "0.5"], capsys)
    assert status == 1
    assert err == "gpudense train: error: --momentum applies to --optimizer sgd only; this run uses adam\n"


def test_unavailable_backend_is_a_one_line_error(capsys, fresh_backends):
    from gpudense.backends import BackendUnavailableError, get_backend

    try:
        get_backend("cupy")
    except BackendUnavailableError:
        pass
    else:
        pytest.skip("a CUDA device is usable here; this test is for machines without one")
    status, _, err = run_cli(["train", "--backend", "cupy", "--epochs", "1"], capsys)
    assert status == 1 and err.count("\n") == 1 and "gpudense train: error:" in err


def test_no_traceback_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "gpudense", "train", "--hidden", "1,,2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("gpudense train: error: argument --hidden")


@pytest.mark.digits
def test_batch_by_batch_copies_give_the_same_run(monkeypatch):
    args = [*FAST, "--epochs", "2", "--hidden", "16"]
    resident = train(parse_args(args), out=io.StringIO())
    real = NumpyBackend.asarray

    def no_room_for_the_training_set(self, a, dtype=None):
        if getattr(a, "shape", None) == (1438, 64):  # as if the set did not fit
            raise MemoryError("out of device memory")
        return real(self, a, dtype)

    monkeypatch.setattr(NumpyBackend, "asarray", no_room_for_the_training_set)
    out = io.StringIO()
    streamed = train(parse_args(args), out=out)
    assert "note: the training set does not fit on the device; copying it batch by batch\n" in out.getvalue()
    assert streamed.history.loss == resident.history.loss
    assert streamed.test_accuracy == resident.test_accuracy


def test_digits_run_uses_one_blas_thread(monkeypatch):
    import threadpoolctl

    seen = []

    def record(args, out=None, comm=None):
        seen.append([i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"])

    monkeypatch.setattr(train_command, "_train", record)
    train(parse_args(["--quiet"]))
    train(parse_args(["--quiet", "--dataset", "synthetic", "--threads", "1"]))
    assert len(seen) == 2 and seen[0] and all(n == 1 for run in seen for n in run)
