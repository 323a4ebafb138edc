"""The fused activation kernels and bfloat16 on a CUDA device, against the NumPy models.

Every test carries the ``gpu`` marker: conftest.py skips it, with the reason,
where CuPy or a usable CUDA device is missing.

Exactness. The kernels perform activation_math's operations in its order,
each rounded on its own, so where no tanh is involved (relu both ways, the
tanh derivative from the saved y, every ``db``) the device must equal the
NumPy models bit for bit. Where the device's tanhf/tanh enters (the tanh and
gelu forward, gelu's derivative) it may differ from NumPy's by a few units
in the last place of t in [-1, 1]; the bound used is
``8 u_acc (1 + |z|) |scale| + 2 u_st |value|`` (u_acc: float32 or float64's
unit roundoff; u_st: the storage type's, for one rounding that may fall the
other way), and ``db`` is then checked bit for bit against the sum, in the
plan's order, of the ``dz`` the device stored.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudense._checks import bfloat16_dtype, float_dtype
from gpudense.backends import get_backend
from gpudense.backends.cuda import bias_grad_plan
from kernel_emulation import emulate_act_bias_grad, emulate_bias_act, emulate_bias_grad

try:
    import cupy as cp
except ImportError:  # the module still collects; the gpu marker skips every test
    cp = None

pytestmark = pytest.mark.gpu

def _needs_ml_dtypes(name):
    """``name`` as a parameter, skipped with the reason for bfloat16 where ml_dtypes is missing."""
    import importlib.util

    if name == "bfloat16" and importlib.util.find_spec("ml_dtypes") is None:
        return pytest.param(name, marks=pytest.mark.skip(reason="bfloat16 needs ml_dtypes (gpudense[bf16])"))
    return name


DTYPES = [_needs_ml_dtypes(d) for d in ("float64", "float32", "float16", "bfloat16")]
ACTS = ["relu", "gelu", "tanh"]
SUFFIX = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}


@pytest.fixture(scope="module")
def backend():
    return get_backend("cupy")


def _u(dtype):
    return 2.0**-8 if np.dtype(dtype).name == "bfloat16" else float(np.finfo(dtype).eps) / 2


def _subnormal_step(dtype):
    """The spacing of dtype's subnormal numbers: the absolute error of rounding a tiny value to it."""
    return 2.0**-133 if np.dtype(dtype).name == "bfloat16" else float(np.finfo(dtype).smallest_subnormal)


def _u_acc(dtype):
    return 2.0**-53 if np.dtype(dtype) == np.float64 else 2.0**-24


def _fused_plan(backend, activation, batch, m, dtype):
    k = backend.kernels()
    name = f"act_bias_grad_{activation}_{SUFFIX[np.dtype(dtype).name]}"
    return bias_grad_plan(batch, m, itemsize=np.dtype(dtype).itemsize, ld=m, ptr=0, n_sm=k.n_sm,
                          blocks_per_sm=k.blocks_per_sm[name])


def _bits(a):
    a = np.asarray(a)
    return a.view(np.uint8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("batch, m", [(1, 1), (5, 3), (300, 40), (4099, 67), (20000, 8), (3, 2051), (0, 9)])
def test_fused_gradient_against_the_model(rng, backend, dtype, activation, batch, m):
    t = float_dtype(dtype)
    z = (3 * rng.standard_normal((batch, m))).astype(t)
    z[::5, ::3] = 0
    _, saved = emulate_bias_act(z, None, activation)
    dy = rng.standard_normal((batch, m)).astype(t)
    old = rng.standard_normal(m).astype(t)
    out = cp.asarray(old)
    dz, db = backend.act_bias_grad(cp.asarray(dy), cp.asarray(saved), activation, out, accumulate=True)
    assert db is out and dz.dtype == t and dz.flags.c_contiguous
    plan = _fused_plan(backend, activation, batch, m, t)
    want_dz, want_db = emulate_act_bias_grad(dy, saved, activation, plan, old, accumulate=True)
    got_dz = cp.asnumpy(dz)
    if activation == "gelu":  # the device's tanh: a few ulps of t; dz rounded to t, subnormals included
        z64 = np.asarray(saved, np.float64)
        tol = 8 * _u_acc(t) * (1 + np.abs(z64)) * np.abs(np.asarray(dy, np.float64)) \
            + 2 * _u(t) * np.abs(np.asarray(want_dz, np.float64)) + _subnormal_step(t)
        assert (np.abs(got_dz.astype(np.float64) - want_dz.astype(np.float64)) <= tol).all()
        want_db = emulate_bias_grad(got_dz, plan, old, accumulate=True)  # the sum of what was stored
    else:
        np.testing.assert_array_equal(_bits(got_dz), _bits(want_dz))
    np.testing.assert_array_equal(_bits(cp.asnumpy(db)), _bits(want_db))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("batch, m", [(1, 1), (7, 8), (33, 35), (1000, 64), (3, 2051), (0, 4)])
def test_forward_bias_and_activation_against_the_model(rng, backend, dtype, activation, batch, m):
    t = float_dtype(dtype)
    z = (4 * rng.standard_normal((batch, m))).astype(t)
    b = rng.standard_normal(m).astype(t)
    zd = cp.asarray(z)
    y, saved = backend.bias_act(zd, cp.asarray(b), activation)
    assert (saved is y) == (activation != "gelu") and y.dtype == t
    want_y, want_saved = emulate_bias_act(z, b, activation)
    if activation == "relu":
        np.testing.assert_array_equal(_bits(cp.asnumpy(y)), _bits(want_y))
    else:
        v = np.asarray(z, np.float64) + np.asarray(b, np.float64)
        tol = 8 * _u_acc(t) * (1 + np.abs(v)) + 2 * _u(t) * np.abs(np.asarray(want_y, np.float64))
        assert (np.abs(cp.asnumpy(y).astype(np.float64) - want_y.astype(np.float64)) <= tol).all()
    if activation == "gelu":  # z + b, written back for the backward pass: exact
        np.testing.assert_array_equal(_bits(cp.asnumpy(saved)), _bits(want_saved))


@pytest.mark.parametrize("activation", ACTS)
def test_fused_gradient_is_the_same_for_every_layout_and_repeatable(rng, backend, activation):
    dy = rng.standard_normal((5000, 37)).astype(np.float32)
    z = rng.standard_normal((5000, 37)).astype(np.float32)
    saved = cp.asarray(emulate_bias_act(z, None, activation)[1])
    first_dz, first_db = (cp.asnumpy(a) for a in backend.act_bias_grad(cp.asarray(dy), saved, activation))
    flat = cp.full(dy.size + 1, np.nan, np.float32)
    flat[1:] = cp.asarray(dy.ravel())
    wide = cp.full((5000, 40), np.nan, np.float32)
    wide[:, :37] = cp.asarray(dy)
    layouts = [flat[1:].reshape(5000, 37), wide[:, :37], cp.asfortranarray(cp.asarray(dy))]
    for d in layouts + [cp.asarray(dy)] * 3:
        dz, db = backend.act_bias_grad(d, saved, activation)
        np.testing.assert_array_equal(_bits(cp.asnumpy(dz)), _bits(first_dz))
        np.testing.assert_array_equal(_bits(cp.asnumpy(db)), _bits(first_db))
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        dz, db = backend.act_bias_grad(cp.asarray(dy), saved, activation)
    stream.synchronize()
    np.testing.assert_array_equal(_bits(cp.asnumpy(db)), _bits(first_db))


def test_no_bias_returns_no_db_and_one_pass_allocates_no_workspace(rng, backend, monkeypatch):
    dy = cp.asarray(rng.standard_normal((64, 8)).astype(np.float32))
    saved = cp.asarray(rng.standard_normal((64, 8)).astype(np.float32))
    dz, db = backend.act_bias_grad(dy, saved, "relu", bias=False)
    assert db is None and dz.shape == (64, 8)
    shapes = []
    real_empty = cp.empty

    def counting_empty(shape, dtype=float, *args, **kwargs):
        shapes.append(tuple(np.atleast_1d(shape)))
        return real_empty(shape, dtype, *args, **kwargs)

    monkeypatch.setattr(backend.xp, "empty", counting_empty)
    out = cp.empty(8, cp.float32)
    shapes.clear()
    backend.bias_grad(dy, out)  # 64 rows: one pass, nothing allocated
    assert shapes == []
    big = cp.asarray(rng.standard_normal((300000, 8)).astype(np.float32))
    backend.bias_grad(big, out)  # split: the workspace only
    assert len(shapes) == 1 and shapes[0][1] == 8


@pytest.mark.parametrize("dtype", [_needs_ml_dtypes("bfloat16"), "float16"])
@pytest.mark.parametrize("batch, m", [(1, 1), (257, 37), (4099, 67), (3, 2051), (50000, 64)])
def test_16_bit_bias_gradient_layouts_are_bitwise_the_emulation(rng, backend, dtype, batch, m):
    t = float_dtype(dtype)
    dy = rng.standard_normal((batch, m)).astype(t)
    k = backend.kernels()
    want = None
    flat = cp.zeros(batch * m + 1, t)
    flat[1:] = cp.asarray(dy.ravel())
    for d in (cp.asarray(dy), flat[1:].reshape(batch, m), cp.asfortranarray(cp.asarray(dy))):
        got = cp.asnumpy(backend.bias_grad(d))
        if want is None:
            plan = bias_grad_plan(batch, m, itemsize=2, ld=m, ptr=0, n_sm=k.n_sm,
                                  blocks_per_sm=k.blocks_per_sm["bias_grad_pass1_" + SUFFIX[dtype]])
            want = emulate_bias_grad(dy, plan)
        np.testing.assert_array_equal(_bits(got), _bits(want))


def test_bfloat16_products_use_float32_compute(rng, backend):
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (gpudense[bf16])")
    bf16 = bfloat16_dtype()
    a = rng.standard_normal((300, 512)).astype(bf16)
    b = rng.standard_normal((512, 70)).astype(bf16)
    got = cp.asnumpy(backend.matmul(cp.asarray(a), cp.asarray(b))).astype(np.float64)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact, scale = a64 @ b64, np.abs(a64) @ np.abs(b64)
    # One rounding to bfloat16 of a float32 sum of 512 terms (cuBLAS may split k: still float32).
    assert (np.abs(got - exact) <= 2.0**-8 * np.abs(exact) + 2 * 512 * 2.0**-24 * scale).all()
    out = cp.asarray(rng.standard_normal((300, 70)).astype(bf16))
    before = cp.asnumpy(out).astype(np.float64)
    backend.matmul_acc(cp.asarray(a), cp.asarray(b), out)
    assert (np.abs(cp.asnumpy(out).astype(np.float64) - (before + exact))
            <= 2 * 2.0**-8 * (np.abs(before) + scale) + 2 * 512 * 2.0**-24 * scale).all()


def test_plan_of_the_device_stays_in_one_wave_for_misaligned_dy(backend):
    k = backend.kernels()
    for name in ("bias_grad_pass1_f32", "act_bias_grad_gelu_bf16"):
        bps = k.blocks_per_sm[name]
        for batch, m, item in ((1048576, 64, 4), (65536, 4096, 2), (8192, 16384, 2)):
            for ptr in (0, item):
                p = bias_grad_plan(batch, m, itemsize=item, ld=m, ptr=ptr, n_sm=k.n_sm, blocks_per_sm=bps)
                assert p.tiles * p.n_chunks <= max(k.n_sm * bps, p.tiles), (name, p)


def test_every_entry_point_is_built_without_local_memory(backend):
    from gpudense.backends.cuda import ENTRY_POINTS

    k = backend.kernels()
    assert sorted(k.functions) == sorted(ENTRY_POINTS)
    for name, fn in k.functions.items():
        assert fn.local_size_bytes == 0, name  # no spills on this device's build either
        assert k.blocks_per_sm[name] >= 2, (name, fn.num_regs)


@pytest.mark.parametrize("dtype", ["float32", _needs_ml_dtypes("bfloat16")])
def test_mlp_training_agrees_with_numpy(rng, dtype):
    """Three Adam steps of a GELU MLP on NumPy and on CuPy (float32 masters either way)."""
    from gpudense.losses import softmax_cross_entropy
    from gpudense.nn import MLP
    from gpudense.optim import Adam

    x = rng.standard_normal((64, 17)).astype(float_dtype(dtype))
    labels = rng.integers(0, 5, 64)
    models = [MLP([17, 32, 5], activation="gelu", dtype=dtype, backend=b, rng=0) for b in ("numpy", "cupy")]
    for model, xp in zip(models, (np, cp)):
        opt = Adam(model, lr=1e-3)
        for _ in range(3):
            _, g = softmax_cross_entropy(model(xp.asarray(x)), xp.asarray(labels))
            model.backward(g)
            opt.step()
            opt.zero_grad()
    # float32: orders of summation differ (~1e-7 relative per step); bfloat16: a parameter may round
    # to the neighbouring bfloat16 value (2**-8 relative) after a step of lr = 1e-3.
    tol = 1e-5 if dtype == "float32" else 2 * 2.0**-8
    for a, b in zip(models[0].param_grads(), models[1].param_grads()):
        pa, pb = np.asarray(a.param, np.float64), cp.asnumpy(b.param).astype(np.float64)
        assert np.abs(pa - pb).max() <= tol * max(1.0, np.abs(pa).max()), a.name
