"""Checkpoints across model layouts and dtypes: an MLP saved with separate activation blocks, bfloat16.

``data/mlp-gelu-unfused.npz`` holds an MLP([5, 8, 6, 3], gelu) written as
``Sequential(Dense, GELU, Dense, GELU, Dense)``: parameters ``0.*``, ``2.*``,
``4.*`` (the activations at the odd indices), an Adam state after two steps,
and in ``extra`` a probe input with the logits that network gave for it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from gpudense._checks import bfloat16_dtype
from gpudense.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpudense.losses import softmax_cross_entropy
from gpudense.nn import MLP
from gpudense.optim import Adam

DATA = Path(__file__).parent / "data"
needs_bf16 = pytest.mark.skipif(importlib.util.find_spec("ml_dtypes") is None,
                                reason="bfloat16 needs ml_dtypes (pip install 'gpudense[bf16]')")


def test_a_checkpoint_of_the_unfused_mlp_loads_and_gives_its_logits():
    ckpt = load_checkpoint(DATA / "mlp-gelu-unfused.npz")
    assert sorted(ckpt.params) == ["0.b", "0.w", "2.b", "2.w", "4.b", "4.w"]
    model = MLP([5, 8, 6, 3], activation="gelu", backend="numpy", rng=9)
    opt = Adam(model)
    ckpt.restore(model, opt, np.random.default_rng(0))
    probe = np.array(ckpt.extra["probe"], np.float32)
    np.testing.assert_allclose(model(probe), np.array(ckpt.extra["logits"]), rtol=1e-6, atol=1e-6)
    assert opt.step_count == 2 and ckpt.epoch == 2
    _, g = softmax_cross_entropy(model(probe), np.array([0, 1]))  # and it trains on
    model.backward(g)
    opt.step()


@needs_bf16
def test_bfloat16_checkpoint_stores_raw_bits_and_round_trips(tmp_path, rng):
    bf16 = bfloat16_dtype()
    model = MLP([4, 8, 3], activation="relu", dtype="bfloat16", backend="numpy", rng=0)
    opt = Adam(model)
    x = rng.standard_normal((6, 4)).astype(bf16)
    _, g = softmax_cross_entropy(model(x), rng.integers(0, 3, 6))
    model.backward(g)
    opt.step()
    path = save_checkpoint(tmp_path / "bf16.npz", model, opt, epoch=1)
    with np.load(path, allow_pickle=False) as z:  # a plain .npz: uint16 bits, float32 optimizer state
        assert z["param/0.w"].dtype == np.uint16 and z["optim/master/0.w"].dtype == np.float32
        meta = json.loads(str(z["meta"][()]))
    assert meta["raw_dtypes"] == {f"param/{n}": "bfloat16" for n in ("0.w", "0.b", "2.w", "2.b")}
    ckpt = load_checkpoint(path)
    assert all(a.dtype == bf16 for a in ckpt.params.values())
    other = MLP([4, 8, 3], activation="relu", dtype="bfloat16", backend="numpy", rng=1)
    other_opt = Adam(other)
    ckpt.restore(other, other_opt)
    for a, b in zip(model.param_grads(), other.param_grads()):
        np.testing.assert_array_equal(a.param.view(np.uint16), b.param.view(np.uint16))
    for slot in opt.state:
        for name, arr in opt.state[slot].items():
            np.testing.assert_array_equal(arr, other_opt.state[slot][name])


def test_a_float32_checkpoint_has_no_raw_dtypes(tmp_path):
    path = save_checkpoint(tmp_path / "f32.npz", MLP([3, 2], backend="numpy", rng=0), epoch=0)
    with np.load(path, allow_pickle=False) as z:
        assert "raw_dtypes" not in json.loads(str(z["meta"][()]))


@needs_bf16
def test_a_bad_raw_dtypes_entry_is_a_checkpoint_error(tmp_path):
    model = MLP([3, 2], dtype="bfloat16", backend="numpy", rng=0)
    path = save_checkpoint(tmp_path / "bf16.npz", model, epoch=0)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"][()]))
        arrays = {k: z[k] for k in z.files if k != "meta"}
    for bad in ({"param/0.w": "float8"}, {"param/9.w": "bfloat16"}):
        meta["raw_dtypes"] = bad
        out = tmp_path / "bad.npz"
        np.savez(out, meta=np.array(json.dumps(meta)), **arrays)
        with pytest.raises(CheckpointError, match="raw_dtypes entry"):
            load_checkpoint(out)
