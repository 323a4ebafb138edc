"""Weights as .safetensors: into torch.nn.Sequential and back, the same outputs (float32 and bfloat16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_run import run_cli
from gpudense.checkpoint import save_checkpoint
from gpudense.inference import load_model
from gpudense.nn import MLP

safetensors = pytest.importorskip("safetensors", reason="needs the safetensors package (the safetensors extra)")


def _torch():
    return pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0; in no extra)")


def _sequential(torch, sizes, activation, dtype):
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh,
           "gelu": lambda: torch.nn.GELU(approximate="tanh")}[activation]
    modules = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        modules.append(torch.nn.Linear(n_in, n_out))
        if k < len(sizes) - 2:
            modules.append(act())
    return torch.nn.Sequential(*modules).to(dtype)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 3e-2)])
@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_export_loads_into_torch_sequential(tmp_path, capsys, dtype, tol, activation):
    torch = _torch()
    import safetensors.torch

    sizes = [7, 12, 9, 3]
    model = MLP(sizes, activation=activation, dtype=dtype, backend="numpy", rng=5)
    ckpt = tmp_path / "m.npz"
    save_checkpoint(ckpt, model, epoch=2)
    out = tmp_path / "m.safetensors"
    status, stdout, err = run_cli(["export", str(ckpt), str(out)], capsys)
    assert status == 0, err
    state = safetensors.torch.load_file(str(out))
    assert sorted(state) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    tdtype = getattr(torch, dtype)
    assert all(t.dtype == tdtype for t in state.values())
    seq = _sequential(torch, sizes, activation, tdtype)
    seq.load_state_dict(state)  # strict: every name and shape fits
    # Bit for bit: weight is w.T, bias is b.
    params = model.state_dict()
    assert np.array_equal(state["2.weight"].float().numpy(), params["2.w"].T.astype(np.float32))
    assert np.array_equal(state["4.bias"].float().numpy(), params["4.b"].astype(np.float32))
    x = np.random.default_rng(0).normal(size=(16, 7)).astype(np.float32)
    ours = model(x.astype(model.dtype)).astype(np.float32)
    with torch.no_grad():
        theirs = seq(torch.from_numpy(x).to(tdtype)).float().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)
    with safetensors.safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and json.loads(meta["gpudense"])["activation"] == activation


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_torch_sequential_comes_back(tmp_path, capsys, dtype):
    torch = _torch()
    import safetensors.torch

    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    seq = _sequential(torch, [5, 8, 4], "gelu", tdtype)
    path = tmp_path / "torch.safetensors"
    safetensors.torch.save_file(seq.state_dict(), str(path))
    ckpt = tmp_path / "back.npz"
    status, _, err = run_cli(["import", str(path), str(ckpt), "--activation", "gelu"], capsys)
    assert status == 0, err
    model = load_model(ckpt, backend="numpy")
    assert model.sizes == [5, 8, 4] and model.activation == "gelu" and model.dtype.name == dtype
    x = np.random.default_rng(1).normal(size=(10, 5)).astype(np.float32)
    with torch.no_grad():
        theirs = seq(torch.from_numpy(x).to(tdtype)).float().numpy()
    tol = 1e-5 if dtype == "float32" else 3e-2
    np.testing.assert_allclose(model(x.astype(model.dtype)).astype(np.float32), theirs, rtol=tol, atol=tol)


def test_round_trip_is_exact_without_torch(tmp_path, capsys):
    model = MLP([4, 6, 2], activation="tanh", dtype="float64", backend="numpy", rng=1)
    ckpt, out, back = tmp_path / "m.npz", tmp_path / "m.safetensors", tmp_path / "b.npz"
    save_checkpoint(ckpt, model, epoch=1)
    assert run_cli(["export", str(ckpt), str(out)], capsys)[0] == 0
    assert run_cli(["import", str(out), str(back)], capsys)[0] == 0
    again = load_model(back, backend="numpy")
    assert again.config() == model.config()
    for name, a in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], a)


def _write(path, tensors, metadata=None):
    import safetensors.numpy

    path.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))
    return str(path)


@pytest.mark.parametrize("tensors, message", [
    ({"0.weight": np.ones((3, 2), np.float32), "1.weight": np.ones((2, 3), np.float32)},
     "expected nn.Linear modules at 0, 2, 4"),
    ({"encoder.weight": np.ones((3, 2), np.float32)}, "is not named as an nn.Sequential"),
    ({"0.weight": np.ones((3, 2), np.int32)}, "expected one of F16, BF16, F32, F64"),
    ({"0.weight": np.ones((3, 2), np.float32), "2.weight": np.ones((2, 4), np.float32)}, "2.weight has shape (2, 4)"),
    ({"0.weight": np.ones((3, 2), np.float32), "0.bias": np.ones(3, np.float32),
      "2.weight": np.ones((2, 3), np.float32)}, "some layers have a bias and some none"),
    ({"0.weight": np.full((3, 2), np.nan, np.float32)}, "not finite"),
    ({"0.weight": np.ones((3, 2), np.float32), "2.weight": np.ones((2, 3), np.float64)}, "several dtypes"),
])
def test_bad_safetensors_files_get_one_line(tmp_path, capsys, tensors, message):
    path = _write(tmp_path / "bad.safetensors", tensors)
    status, _, err = run_cli(["import", path, str(tmp_path / "c.npz")], capsys)
    assert status == 1 and message in err and err.count("\n") == 1
    assert not (tmp_path / "c.npz").exists()


def test_not_a_safetensors_file(tmp_path, capsys):
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 3)
    status, _, err = run_cli(["import", str(tmp_path / "x.safetensors"), str(tmp_path / "c.npz")], capsys)
    assert status == 1 and "not a readable .safetensors file" in err


def test_activation_conflicting_with_the_metadata(tmp_path, capsys):
    model = MLP([3, 4, 2], activation="relu", backend="numpy", rng=0)
    ckpt, out = tmp_path / "m.npz", tmp_path / "m.safetensors"
    save_checkpoint(ckpt, model, epoch=0)
    assert run_cli(["export", str(ckpt), str(out)], capsys)[0] == 0
    status, _, err = run_cli(["import", str(out), str(tmp_path / "c.npz"), "--activation", "tanh"], capsys)
    assert status == 1 and "saved from a model with activation 'relu'" in err
