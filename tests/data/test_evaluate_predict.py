"""gpudense evaluate and predict against a reference computed from the checkpoint's weights alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_run import run_cli
from gpudense.checkpoint import load_checkpoint, save_checkpoint
from gpudense.inference import load_model, predict, score
from gpudense.nn import MLP


def _reference_logits(params, x):
    """``relu(x @ w0 + b0) @ w2 + b2``, in float64, from the raw parameter arrays."""
    h = np.maximum(x.astype(np.float64) @ params["0.w"].astype(np.float64) + params["0.b"], 0.0)
    return h @ params["2.w"].astype(np.float64) + params["2.b"]


@pytest.fixture
def trained(tmp_path):
    gen = np.random.default_rng(3)
    x = gen.normal(size=(301, 6)).astype(np.float32)
    y = (np.arange(301) % 4).astype(np.int64)
    x[:, 0] += y  # learnable, not perfectly
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ckpt = tmp_path / "m.npz"
    save_checkpoint(ckpt, MLP([6, 9, 4], backend="numpy", rng=11), epoch=1)
    return tmp_path, ckpt, x, y


def test_evaluate_json_matches_the_reference(trained, capsys):
    folder, ckpt, x, y = trained
    params = load_checkpoint(ckpt).params
    logits = _reference_logits(params, x)
    pred = logits.argmax(axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    loss = float(np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]))
    for data in (str(folder / "d.npz"), f"{folder / 'x.npy'},{folder / 'y.npy'}"):
        status, out, err = run_cli(["evaluate", str(ckpt), "--data", data, "--json", "--backend", "numpy",
                                    "--batch-size", "64"], capsys)
        assert status == 0, err
        result = json.loads(out)
        assert result["samples"] == 301
        assert result["accuracy"] == pytest.approx(np.mean(pred == y), abs=1e-12)
        assert result["loss"] == pytest.approx(loss, rel=1e-5)
        assert result["classes"]["count"] == np.bincount(y, minlength=4).tolist()
        assert result["classes"]["predicted"] == np.bincount(pred, minlength=4).tolist()
        assert result["classes"]["correct"] == np.bincount(y[pred == y], minlength=4).tolist()


def test_evaluate_prints_a_table(trained, capsys):
    folder, ckpt, _, _ = trained
    status, out, _ = run_cli(["evaluate", str(ckpt), "--data", str(folder), "--backend", "numpy"], capsys)
    assert status == 0 and "accuracy" in out and out.count("\n") == 4 + 4


def test_evaluate_refuses_labels_the_model_cannot_give(trained, tmp_path, capsys):
    _, ckpt, x, _ = trained
    np.savez(tmp_path / "bad.npz", x=x[:3], y=np.array([0, 1, 4]))
    status, _, err = run_cli(["evaluate", str(ckpt), "--data", str(tmp_path / "bad.npz"), "--backend", "numpy"],
                             capsys)
    assert status == 1 and "labels must lie in [0, 4)" in err and err.count("\n") == 1


def test_evaluate_refuses_the_wrong_number_of_features(trained, tmp_path, capsys):
    _, ckpt, _, _ = trained
    np.savez(tmp_path / "bad.npz", x=np.ones((3, 5)), y=np.array([0, 1, 2]))
    status, _, err = run_cli(["evaluate", str(ckpt), "--data", str(tmp_path / "bad.npz"), "--backend", "numpy"],
                             capsys)
    assert status == 1 and "takes 6 features per sample" in err


@pytest.mark.parametrize("proba", [False, True])
def test_predict_writes_the_reference_predictions(trained, capsys, proba):
    folder, ckpt, x, _ = trained
    out_path = folder / "p.npy"
    argv = ["predict", str(ckpt), "--data", str(folder / "x.npy"), "--out", str(out_path), "--backend", "numpy",
            "--batch-size", "50"] + (["--proba"] if proba else [])
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    logits = _reference_logits(load_checkpoint(ckpt).params, x)
    got = np.load(out_path, allow_pickle=False)
    if proba:
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
        assert got.shape == (301, 4) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    else:
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, logits.argmax(axis=1))


def test_predict_leaves_the_old_file_when_it_fails(trained, capsys):
    folder, ckpt, _, _ = trained
    out_path = folder / "p.npy"
    out_path.write_bytes(b"old")
    (folder / "bad.npy").write_bytes(b"")
    status, _, err = run_cli(["predict", str(ckpt), "--data", str(folder / "bad.npy"), "--out", str(out_path),
                              "--backend", "numpy"], capsys)
    assert status == 1 and "is empty" in err
    assert out_path.read_bytes() == b"old"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_predict_needs_a_npy_output_path(trained, capsys):
    folder, ckpt, _, _ = trained
    status, _, err = run_cli(["predict", str(ckpt), "--data", str(folder), "--out", str(folder / "p.txt"),
                              "--backend", "numpy"], capsys)
    assert status == 1 and "ending in .npy" in err


def test_memory_mapped_features_are_scored_in_batches(trained):
    folder, ckpt, x, y = trained
    model = load_model(ckpt, backend="numpy")
    mapped = np.load(folder / "x.npy", mmap_mode="r")
    assert score(model, mapped, y, batch_size=17) == score(model, x, y, batch_size=17)
    np.testing.assert_array_equal(predict(model, mapped, batch_size=13), predict(model, x))


@pytest.mark.gpu
def test_cupy_scores_as_numpy(trained):
    folder, ckpt, x, y = trained
    on_cpu = score(load_model(ckpt, backend="numpy"), x, y)
    on_gpu = score(load_model(ckpt, backend="cupy"), np.load(folder / "x.npy", mmap_mode="r"), y, batch_size=40)
    assert on_gpu["classes"]["count"] == on_cpu["classes"]["count"]
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-4)
    probs = predict(load_model(ckpt, backend="cupy"), x, proba=True, batch_size=64)
    np.testing.assert_allclose(probs, predict(load_model(ckpt, backend="numpy"), x, proba=True), rtol=1e-4, atol=1e-6)


def test_predict_refuses_an_out_over_the_labels_of_its_data_folder(trained, capsys):
    folder, ckpt, _, y = trained
    status, _, err = run_cli(["predict", str(ckpt), "--data", str(folder), "--out", str(folder / "y.npy"),
                              "--backend", "numpy"], capsys)
    assert status == 1 and err.count("\n") == 1
    np.testing.assert_array_equal(np.load(folder / "y.npy"), y)  # the labels are kept
