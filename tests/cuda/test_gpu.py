"""The CuPy path against the CPU references, on a CUDA device.

Every test carries the ``gpu`` marker: conftest.py skips it, with the reason,
where CuPy or a usable CUDA device is missing.

Every output (y, dx, dw, db) of dense_forward / dense_backward and Dense on
CuPy arrays is compared with tests/reference.py (loop-level float64) for
float64, float32 and float16, through ``reference.check_layer`` where the
whole layer is checked. Tolerances are reference.assert_close's (the
rounding-error bound of a length-n sum, times 2); for db there is also a
tighter bound, since the kernel adds float16 inputs (exact in float32) in
float32 and rounds once:

    |db - exact| <= u(dtype) |exact| + batch * u(acc) * sum_k |dy[k, j]|

(u the unit roundoff; acc = float32 for float16, else the dtype itself).

Besides, the kernel's db is compared bit for bit with
``kernel_emulation.emulate_bias_grad``, the NumPy model of the kernel's
summation order (tested on the CPU against a thread-by-thread simulation of
the .cu file, tests/cuda/test_emulation.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from gpudense import Dense, dense_backward, dense_forward
from gpudense.backends import get_backend
from gpudense.backends.cuda import bias_grad_plan, library_facts
from kernel_emulation import emulate_bias_grad

try:
    import cupy as cp
except ImportError:  # the module still collects; the gpu marker skips every test
    cp = None

pytestmark = pytest.mark.gpu

DTYPES = [np.float64, np.float32, np.float16]


@pytest.fixture(scope="module")
def backend():
    return get_backend("cupy")


def _poison_pool(nbytes):
    """Fill and free pool memory with NaN so that an unwritten new output shows as NaN."""
    a = cp.full(max(1, nbytes // 8 + 64), np.nan, cp.float64)
    del a


def _plan_for(backend, dy):
    """The plan the backend launches for the device array ``dy`` (rows unit-stride)."""
    k = backend.kernels()
    suffix = {8: "f64", 4: "f32", 2: "f16"}[dy.itemsize]
    name = "bias_grad_pass1_" + suffix
    ld = dy.strides[0] // dy.itemsize if dy.shape[0] > 1 else dy.shape[1]
    return bias_grad_plan(dy.shape[0], dy.shape[1], itemsize=dy.itemsize, ld=ld, ptr=dy.data.ptr,
                          n_sm=k.n_sm, blocks_per_sm=k.blocks_per_sm[name])


def assert_db_close(got, dy_host, dtype, name="db"):
    """The kernel's bound: one rounding to dtype plus a length-batch sum in the accumulator type."""
    d = np.asarray(dy_host, np.float64).reshape(-1, np.shape(dy_host)[-1])
    if np.dtype(dtype) == np.float64:  # a float64 sum of float64 data is not exact: use fsum
        exact = np.array([math.fsum(col) for col in d.T])
    else:  # float32/float16 data: the float64 sum's own error is far below the tolerance
        exact = d.sum(axis=0)
    scale = np.abs(d).sum(axis=0)
    acc = np.float32 if np.dtype(dtype) == np.float16 else dtype
    tol = np.finfo(dtype).eps / 2 * np.abs(exact) + d.shape[0] * np.finfo(acc).eps / 2 * scale
    err = np.abs(np.asarray(got, np.float64) - exact)
    bad = ~(err <= tol * 1.0001)
    assert not bad.any(), f"{name}: {bad.sum()} columns off; worst {err[bad].max()} vs tol {tol[bad].min()}"


def check_against_reference(x, w, b, dy, *, input_grad=True):
    """``reference.check_layer`` on device copies of the host arrays, after poisoning the pool; then db's bound."""
    dtype = x.dtype
    xd, wd, bd, dyd = (cp.asarray(a) for a in (x, w, b, dy))
    _poison_pool(max(dy.nbytes, x.nbytes))
    g = ref.check_layer(xd, wd, bd, dyd, input_grad=input_grad)
    assert_db_close(g.db.get(), dy, dtype)
    for a in (g.dx, g.dw, g.db):
        assert a is None or a.dtype == dtype


SHAPES = [
    ((1, 5), 3),  # batch 1
    ((7, 4), 1),  # m = 1
    ((33, 17), 35),  # m not a multiple of 4 or 32
    ((64, 8), 37),
    ((130, 9), 67),
    ((2, 3, 4), 5),  # leading batch dims
    ((4, 5, 6), 33),
    ((0, 4), 3),  # batch 0
    ((300, 3), 64),
]


def test_backend_is_cupy_and_auto_picks_it(backend):
    assert backend.name == "cupy"
    assert get_backend("auto").name == "cupy"
    facts = backend.describe()
    assert "device" in facts and "nvtx" in facts
    assert facts["device"].startswith(f"{cp.cuda.runtime.getDevice()}: ")
    lib = library_facts()
    assert lib["cupy"] == cp.__version__
    assert lib["cuda_runtime"][0].isdigit() and lib["cuda_driver"][0].isdigit(), lib


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape_x, n_out", SHAPES)
def test_matches_reference(rng, dtype, shape_x, n_out):
    check_against_reference(*ref.random_inputs(rng, shape_x, n_out, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_input_grad(rng, dtype):
    check_against_reference(*ref.random_inputs(rng, (9, 6), 5, dtype), input_grad=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_gives_zero_gradients(rng, dtype):
    x, w, b, dy = ref.random_inputs(rng, (0, 4), 3, dtype)
    g = dense_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w))
    assert g.dx.shape == (0, 4)
    np.testing.assert_array_equal(g.dw.get(), np.zeros((4, 3), dtype))
    np.testing.assert_array_equal(g.db.get(), np.zeros(3, dtype))


# --------------------------------------------------------------------------
# The bias-gradient kernel on its own
# --------------------------------------------------------------------------


def _layouts(dy_host):
    """The same values as device arrays in several layouts, each with a note."""
    batch, m = dy_host.shape
    out = []
    out.append(("contiguous", cp.asarray(dy_host)))
    wide = cp.asarray(np.concatenate([dy_host, np.full((batch, 5), np.nan, dy_host.dtype)], axis=1))
    out.append(("row pitch m+5", wide[:, :m]))
    flat = cp.full(batch * m + 1, np.nan, dy_host.dtype)
    flat[1:] = cp.asarray(dy_host.ravel())
    out.append(("base misaligned by one element", flat[1:].reshape(batch, m)))
    every_other = cp.full((2 * batch, m), np.nan, dy_host.dtype)
    every_other[::2] = cp.asarray(dy_host)
    out.append(("every other row", every_other[::2]))
    out.append(("rows reversed", cp.asarray(dy_host[::-1].copy())[::-1]))
    out.append(("column-major (copied)", cp.asfortranarray(cp.asarray(dy_host))))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, m", [(1, 1), (5, 3), (100, 1), (257, 37), (1000, 130), (4099, 67), (3, 2051)])
def test_bias_grad_layouts_are_bitwise_equal_to_the_emulation(rng, backend, dtype, batch, m):
    dy = rng.standard_normal((batch, m)).astype(dtype)
    want = None
    for note, d in _layouts(dy):
        assert d.shape == (batch, m)
        out = cp.full(m, np.nan, dtype)
        got = backend.bias_grad(d, out)
        assert got is out
        got = got.get()
        assert np.isfinite(got).all(), f"{note}: unwritten or NaN-polluted columns"
        if want is None:
            plan = _plan_for(backend, cp.asarray(dy))
            want = emulate_bias_grad(dy, plan)
            assert_db_close(got, dy, dtype, f"db ({note})")
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=note)


def test_float32_subnormals_are_summed_not_flushed(backend):
    """CuPy compiles with -ftz=true; the kernel's float32 sums must still keep subnormals."""
    tiny = np.finfo(np.float32).smallest_subnormal
    dy = np.full((3000, 5), tiny, np.float32)
    dy[::2, 1] = -tiny
    got = backend.bias_grad(cp.asarray(dy)).get()
    want = emulate_bias_grad(dy, _plan_for(backend, cp.asarray(dy)))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got[0] == np.float32(3000 * tiny) and got[1] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_grad_is_bitwise_repeatable_across_runs_and_streams(rng, backend, dtype):
    dy = cp.asarray(rng.standard_normal((50000, 77)).astype(dtype))
    first = backend.bias_grad(dy).get()
    for _ in range(5):
        np.testing.assert_array_equal(backend.bias_grad(dy).get().view(np.uint8), first.view(np.uint8))
    for _ in range(3):
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:
            got = backend.bias_grad(dy)
        stream.synchronize()
        np.testing.assert_array_equal(got.get().view(np.uint8), first.view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, m", [(0, 7), (1, 5), (300, 33), (20000, 40)])
def test_bias_grad_accumulate(rng, backend, dtype, batch, m):
    dy = rng.standard_normal((batch, m)).astype(dtype)
    old = rng.standard_normal(m).astype(dtype)
    out = cp.asarray(old)
    got = backend.bias_grad(cp.asarray(dy), out, accumulate=True).get()
    want = emulate_bias_grad(dy, _plan_for(backend, cp.asarray(dy)), old, accumulate=True)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    d = np.vstack([dy, old[None, :]])  # old + sum: a sum of batch + 1 terms
    assert_db_close(got, d, dtype, "db accumulated")


def test_bias_grad_accumulate_keeps_nan_and_overwrite_clears_it(rng, backend):
    dy = cp.asarray(rng.standard_normal((100, 9)).astype(np.float32))
    out = cp.full(9, np.nan, np.float32)
    assert np.isnan(backend.bias_grad(dy, out, accumulate=True).get()).all()  # NaN + x = NaN
    assert np.isfinite(backend.bias_grad(dy, out).get()).all()  # overwritten


def test_bias_grad_rejects_bad_out(backend):
    dy = cp.ones((4, 3), cp.float32)
    with pytest.raises(ValueError):
        backend.bias_grad(dy, cp.empty(4, cp.float32))
    with pytest.raises(ValueError):
        backend.bias_grad(dy, cp.empty(3, cp.float64))
    with pytest.raises(ValueError):
        backend.bias_grad(dy, accumulate=True)
    with pytest.raises(TypeError):
        backend.bias_grad(cp.ones((4, 3), cp.int32))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_batch_2_pow_20_against_float64_on_the_host(rng, dtype):
    batch, n_in, n_out = 2**20, 16, 36
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    dy = rng.standard_normal((batch, n_out)).astype(dtype)
    w = rng.standard_normal((n_in, n_out)).astype(dtype)
    g = dense_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), input_grad=False)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    ref.assert_close(g.dw.get(), x64.T @ dy64, np.abs(x64).T @ np.abs(dy64), batch, dtype, "dw")
    assert_db_close(g.db.get(), dy, dtype)
    backend = get_backend("cupy")
    want = emulate_bias_grad(dy, _plan_for(backend, cp.asarray(dy)))
    np.testing.assert_array_equal(g.db.get().view(np.uint8), want.view(np.uint8))


def test_more_than_2_pow_31_elements(backend):
    """float16 (2^25 + 5, 64): 2^31 + 320 elements, about 4.3 GB; needs the device memory."""
    batch, m = 2**25 + 5, 64
    need = batch * m * 2
    free, _total = cp.cuda.runtime.memGetInfo()
    if free < need + 2**30:
        pytest.skip(f"needs {need / 2**30:.1f} GiB + 1 GiB free on the device; {free / 2**30:.1f} GiB free")
    # dy[k, j] = ((7k + j) mod 17 - 8) / 4: exact in float16, every partial sum exact in float32.
    dy = cp.empty((batch, m), cp.float16)
    j = cp.arange(m, dtype=cp.int64)[None, :]
    step = 2**18
    for start in range(0, batch, step):
        k = cp.arange(start, min(batch, start + step), dtype=cp.int64)[:, None]
        dy[start : start + k.shape[0]] = ((((7 * k + j) % 17) - 8) * 0.25).astype(cp.float16)
    # Marker rows at the end, so rows past 2^31 elements must be read.
    tail = np.arange(3 * m, dtype=np.float64).reshape(3, m) % 5 + 1
    dy[-3:] = cp.asarray(tail.astype(np.float16))
    # Exact expectation on the host: the pattern sums to 0 over any 17 consecutive rows.
    counts = np.bincount(np.arange(batch - 3) % 17, minlength=17)  # (7k + j) mod 17 depends on k mod 17
    expect = np.zeros(m)
    for r in range(17):
        expect += counts[r] * ((((7 * r + np.arange(m)) % 17) - 8) * 0.25)
    expect += tail.sum(axis=0)
    got = backend.bias_grad(dy).get()
    np.testing.assert_array_equal(got.astype(np.float64), expect)
    del dy


# --------------------------------------------------------------------------
# Matrix products, streams, the layer
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_accumulate(rng, backend, dtype):
    a = rng.standard_normal((40, 300)).astype(dtype)
    b = rng.standard_normal((300, 24)).astype(dtype)
    old = rng.standard_normal((40, 24)).astype(dtype)
    out = cp.asarray(old)
    got = backend.matmul_acc(cp.asarray(a), cp.asarray(b), out)
    assert got is out
    want = old.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(old.astype(np.float64)) + np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    ref.assert_close(got.get(), want, scale, 301, dtype, "out += a @ b")
    # Transposed operand as the backward pass passes it (x.T), and an empty inner dimension.
    xt = cp.asarray(rng.standard_normal((300, 40)).astype(dtype)).T
    out2 = cp.asarray(old)
    backend.matmul_acc(xt, cp.asarray(b), out2)
    xt64 = xt.get().astype(np.float64)
    want2 = old.astype(np.float64) + xt64 @ b.astype(np.float64)
    scale2 = np.abs(old.astype(np.float64)) + np.abs(xt64) @ np.abs(b.astype(np.float64))
    ref.assert_close(out2.get(), want2, scale2, 301, dtype, "out += x.T @ b")
    out3 = cp.asarray(old)
    backend.matmul_acc(cp.empty((40, 0), dtype), cp.empty((0, 24), dtype), out3)
    np.testing.assert_array_equal(out3.get(), old)
    poisoned = cp.full((40, 24), np.nan, dtype)
    cp.matmul(cp.asarray(a), cp.asarray(b), out=poisoned)
    assert np.isfinite(poisoned.get()).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_default_stream(rng, dtype):
    x, w, b, dy = ref.random_inputs(rng, (70, 12), 19, dtype)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        xd, wd, bd, dyd = (cp.asarray(a) for a in (x, w, b, dy))
        y = dense_forward(xd, wd, bd)
        g = dense_backward(dyd, xd, wd)
        assert cp.cuda.get_current_stream().ptr == stream.ptr
    stream.synchronize()
    ref.assert_close(y.get(), ref.forward(x, w, b), ref.abs_forward(x, w, b), 12, dtype, "y")
    rdx, rdw, rdb = ref.backward(dy, x, w)
    sdx, sdw, sdb = ref.abs_backward(dy, x, w)
    ref.assert_close(g.dx.get(), rdx, sdx, 19, dtype, "dx")
    ref.assert_close(g.dw.get(), rdw, sdw, 70, dtype, "dw")
    assert_db_close(g.db.get(), dy, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_dy_in_dense_backward(rng, dtype):
    x, w, _, dy = ref.random_inputs(rng, (45, 6), 13, dtype)
    big = cp.full((90, 20), np.nan, dtype)
    big[::2, 3:16] = cp.asarray(dy)
    dys = big[::2, 3:16]
    assert not dys.flags.c_contiguous
    g = dense_backward(dys, cp.asarray(x), cp.asarray(w))
    rdx, rdw, rdb = ref.backward(dy, x, w)
    sdx, sdw, sdb = ref.abs_backward(dy, x, w)
    ref.assert_close(g.dx.get(), rdx, sdx, 13, dtype, "dx")
    ref.assert_close(g.dw.get(), rdw, sdw, 45, dtype, "dw")
    assert_db_close(g.db.get(), dy, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_layer_accumulates_like_the_reference(rng, dtype):
    layer = Dense(11, 7, dtype=dtype, backend="cupy", rng=3)
    w, b = layer.w.get(), layer.b.get()
    dw_sum, sdw_sum = np.zeros((11, 7)), np.zeros((11, 7))
    db_sum, sdb_sum = np.zeros(7), np.zeros(7)
    for step in range(2):
        x = rng.standard_normal((3, 5, 11)).astype(dtype)
        dy = rng.standard_normal((3, 5, 7)).astype(dtype)
        y = layer(cp.asarray(x))
        ref.assert_close(y.get(), ref.forward(x, w, b), ref.abs_forward(x, w, b), 11, dtype, "y")
        dx = layer.backward(cp.asarray(dy))
        rdx, rdw, rdb = ref.backward(dy, x, w)
        sdx, sdw, sdb = ref.abs_backward(dy, x, w)
        ref.assert_close(dx.get(), rdx, sdx, 7, dtype, "dx")
        dw_sum += rdw
        sdw_sum += sdw
        db_sum += rdb
        sdb_sum += sdb
    # two accumulated backward passes: sums of 2 * 15 terms
    ref.assert_close(layer.dw.get(), dw_sum, sdw_sum, 30, dtype, "dw accumulated")
    # db was rounded to dtype after the first step, then old + sum rounded once more
    ref.assert_close(layer.db.get(), db_sum, sdb_sum, 30, dtype, "db accumulated")
    layer.zero_grad()
    assert layer.dw is None and layer.db is None


def test_kernel_build_error_carries_the_compiler_log(monkeypatch):
    from gpudense.backends.cuda import loader
    from gpudense.backends.cuda.loader import DeviceKernels, KernelBuildError

    monkeypatch.setattr(loader, "kernel_source",
                        lambda name: ("extern \"C\" __global__ void bias_grad_pass1_f64( { oops", "/x/broken.cu"))
    with pytest.raises(KernelBuildError) as info:
        DeviceKernels(cp, cp.cuda.runtime.getDevice())
    assert "broken.cu" in str(info.value) and "broken.cu" in info.value.log


def test_nvtx_ranges_run(backend):
    for name in ("gpudense.forward", "gpudense.backward.dx", "gpudense.backward.dw", "gpudense.backward.db"):
        with backend.nvtx_range(name):
            pass
