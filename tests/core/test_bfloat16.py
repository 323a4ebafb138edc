"""bfloat16 (``ml_dtypes.bfloat16``) wherever float16 is accepted, against float64 references.

Tolerances. bfloat16 keeps 8 significant bits: its unit roundoff is
u = 2**-8 (3.9e-3), 2**16 times float32's. Every product and sum is computed
in float32 (NumPy: float32 copies and one BLAS call; CuPy: cuBLAS with
float32 compute; the kernels add in float32), so a length-n sum carries
n * 2**-24 relative to the sum of magnitudes, and each value stored in
bfloat16 is rounded once more, by at most u relative (a layer's output:
the product, then the bias add). reference.check_layer_act states the
per-element bounds that follow; they are a few parts in a thousand of the
scale, far below what a wrong formula or a float16 mix-up would give.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (pip install 'gpudense[bf16]')")

import reference as ref  # noqa: E402
from gpudense import Dense  # noqa: E402
from gpudense._checks import FLOAT_NAMES, bfloat16_dtype, float_dtype, is_float_dtype, wide_dtype
from gpudense.backends import get_backend
from gpudense.losses import mse_loss, softmax_cross_entropy
from gpudense.nn import MLP
from gpudense.optim import SGD, Adam

BF16 = bfloat16_dtype()
U = 2.0**-8  # bfloat16's unit roundoff


def test_the_dtype_is_found_by_name_and_widens_to_float32():
    assert float_dtype("bfloat16") == BF16 == float_dtype(" BFloat16 ") == float_dtype(BF16)
    assert BF16.name == "bfloat16" and BF16.itemsize == 2
    assert is_float_dtype(BF16) and not is_float_dtype(np.dtype(np.uint16))
    assert wide_dtype(BF16) == np.float32 and wide_dtype("bfloat16") == np.float32
    assert "bfloat16" in FLOAT_NAMES


def test_without_ml_dtypes_bfloat16_is_one_clear_error_and_the_rest_works():
    code = (
        "import sys; sys.modules['ml_dtypes'] = None\n"
        "import numpy as np, gpudense\n"
        "print(gpudense.Dense(2, 2, backend='numpy', rng=0).dtype)\n"
        "try:\n"
        "    gpudense.Dense(2, 2, dtype='bfloat16', backend='numpy')\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "float32"
    assert len(lines) == 2 and lines[1].startswith("bfloat16 needs the ml_dtypes package")
    assert lines[1].endswith("install it with pip install 'gpudense[bf16]'")


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "tanh"])
@pytest.mark.parametrize("shape_x, n_out", [((1, 5), 3), ((33, 17), 35), ((2, 3, 4), 5), ((300, 9), 64), ((0, 4), 3)])
def test_layer_matches_the_float64_reference(xp, rng, activation, shape_x, n_out):
    x, w, b, dy = ref.random_inputs(rng, shape_x, n_out, np.float32)
    args = [xp.asarray(a.astype(BF16)) for a in (x, w, b, dy)]
    y, g = ref.check_layer_act(*args, activation)
    assert y.dtype == BF16 and g.dw.dtype == BF16 and g.db.dtype == BF16


def test_numpy_products_are_float32_rounded_once(rng):
    be = get_backend("numpy")
    a = rng.standard_normal((40, 70)).astype(BF16)
    b = rng.standard_normal((70, 9)).astype(BF16)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(BF16)
    got = be.matmul(a, b)
    assert got.dtype == BF16
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    out = rng.standard_normal((40, 9)).astype(BF16)
    total = (out.astype(np.float32) + a.astype(np.float32) @ b.astype(np.float32)).astype(BF16)
    be.matmul_acc(a, b, out)
    np.testing.assert_array_equal(out.view(np.uint16), total.view(np.uint16))


def test_bias_gradient_sums_in_float32_and_rounds_once(rng):
    dy = rng.standard_normal((5000, 13)).astype(BF16)
    d = dy.astype(np.float64)
    exact = d.sum(axis=0)
    db = get_backend("numpy").bias_grad(dy)
    assert db.dtype == BF16
    tol = U * np.abs(exact) + 5000 * 2.0**-24 * np.abs(d).sum(axis=0)
    assert (np.abs(db.astype(np.float64) - exact) <= tol).all()
    old = rng.standard_normal(13).astype(BF16)
    out = old.copy()
    get_backend("numpy").bias_grad(dy, out, accumulate=True)  # old + the float32 sum, rounded once
    assert out.dtype == BF16
    assert (np.abs(out.astype(np.float64) - (exact + old.astype(np.float64))) <= tol + U * np.abs(old)).all()


def test_losses_reduce_in_float32(rng):
    logits = (3 * rng.standard_normal((64, 10))).astype(BF16)
    labels = rng.integers(0, 10, 64)
    loss, grad = softmax_cross_entropy(logits, labels)
    z = logits.astype(np.float64)
    top = z.max(1)
    want_loss = float(np.mean(np.log(np.exp(z - top[:, None]).sum(1)) + top - z[np.arange(64), labels]))
    assert loss.dtype == np.float32 and grad.dtype == BF16
    assert abs(float(loss) - want_loss) <= 1e-5 * max(1.0, abs(want_loss))
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(1, keepdims=True)
    p[np.arange(64), labels] -= 1
    p /= 64
    assert np.abs(grad.astype(np.float64) - p).max() <= U * np.abs(p).max() + 1e-7
    target = rng.standard_normal((8, 3)).astype(BF16)
    y = rng.standard_normal((8, 3)).astype(BF16)
    m = mse_loss(y, target)
    assert m.loss.dtype == np.float32 and m.grad.dtype == BF16
    assert abs(float(m.loss) - float(((y.astype(np.float64) - target.astype(np.float64)) ** 2).mean())) < 1e-6


@pytest.mark.parametrize("make", [lambda m: Adam(m, lr=0.01, weight_decay=1e-3),
                                  lambda m: SGD(m, lr=0.1, momentum=0.9)])
def test_optimizers_keep_float32_masters_and_state(rng, make):
    """A bfloat16 model steps exactly as a float32 copy would; its parameters are the masters rounded."""
    model = MLP([5, 6, 3], dtype="bfloat16", backend="numpy", rng=0)
    twin = MLP([5, 6, 3], dtype="float32", backend="numpy", rng=1)
    twin.load_state_dict({k: v.astype(np.float32) for k, v in model.state_dict().items()})
    opt, opt_twin = make(model), make(twin)
    x = rng.standard_normal((7, 5)).astype(BF16)
    labels = rng.integers(0, 3, 7)
    for _ in range(3):
        _, g = softmax_cross_entropy(model(x), labels)
        model.backward(g)
        for pg, pt in zip(model.param_grads(), twin.param_grads()):  # the twin takes the same gradients
            twin_grad = pg.grad.astype(np.float32)
            blk = twin[int(pt.name.split(".")[0]) // 2]
            if pt.name.endswith(".w"):
                blk.dw = twin_grad
            else:
                blk.db = twin_grad
        opt.step()
        opt_twin.step()
        opt.zero_grad()
        opt_twin.zero_grad()
    for (name, p, _), (_, pt, _) in zip(model.param_grads(), twin.param_grads()):
        master = opt.state["master"][name]
        assert master.dtype == np.float32 and p.dtype == BF16
        np.testing.assert_array_equal(master, pt)  # the same float32 arithmetic
        np.testing.assert_array_equal(p.view(np.uint16), master.astype(BF16).view(np.uint16))
        for slot, arrays in opt.state.items():
            assert arrays[name].dtype == np.float32, slot


def test_dense_layer_in_bfloat16(rng):
    layer = Dense(4, 3, activation="gelu", dtype="bfloat16", backend="numpy", rng=0)
    assert layer.w.dtype == BF16 and "dtype=bfloat16" in repr(layer)
    y = layer(rng.standard_normal((5, 4)).astype(BF16))
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == layer.dw.dtype == layer.db.dtype == BF16
