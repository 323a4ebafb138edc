"""The CuPy backend's glue run on the CuPy stand-in (tests/cupy_standin), in CI, without a GPU.

The stand-in runs the kernels' host build and checks every launch against the
kernel's C signature, mirrors ``cupy.cublas.gemm`` and cuBLAS's argument
checks, and NCCL's datatypes. Each test here fails on a defect the stand-in
exposes: an output with a zero dimension given to cuBLAS (``ld = 0``), an
NVRTC that cannot be loaded escaping the loader, bfloat16 through CuPy's
``cupyx.distributed`` table. The GPU tests themselves (tests/cuda/test_gpu*.py,
tests/training/test_gpu*.py) run on the stand-in through
``pytest -p cupy_standin.plugin``: see :func:`test_gpu_tests_pass_on_the_standin`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cupy_standin
from gpudense.backends import get_backend

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cp():
    with cupy_standin.installed() as module:
        yield module


@pytest.fixture
def backend(cp):
    return get_backend("cupy")


def test_the_stand_in_refuses_what_cupy_refuses(cp):
    a = cp.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        a + np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(a)
    with pytest.raises(TypeError):
        a[...] = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="Unsupported dtype"):
        cp.empty(3, np.longdouble)
    with pytest.raises(TypeError, match="must be tuples"):
        get_backend("cupy").kernels().functions["bias_grad_pass2_f32"]([1, 1, 1], (256, 1, 1), ())


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_acc_with_an_empty_output_leaves_it_and_calls_no_gemm(backend, cp, shape, dtype):
    m, n = shape
    a, b = cp.ones((m, 4), dtype), cp.ones((4, n), dtype)
    out = cp.zeros((m, n), dtype)
    start = len(cupy_standin.CALLS)
    assert backend.matmul_acc(a, b, out) is out
    assert out.shape == (m, n)
    assert not [c for c in cupy_standin.CALLS[start:] if c[0] == "cublas.gemm"]


def test_cublas_refuses_a_zero_leading_dimension(cp):
    """What matmul_acc would meet without its check: cuBLAS's CUBLAS_STATUS_INVALID_VALUE for ld = 0."""
    import cupy.cublas

    with pytest.raises(RuntimeError, match="CUBLAS_STATUS_INVALID_VALUE"):
        cupy.cublas.gemm("N", "N", cp.ones((0, 4), np.float32), cp.ones((4, 5), np.float32),
                         out=cp.zeros((0, 5), np.float32), alpha=1.0, beta=1.0)


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_matmul_acc_adds_the_product(backend, cp, rng, layout, dtype):
    a = rng.standard_normal((7, 5)).astype(dtype)
    b = rng.standard_normal((5, 3)).astype(dtype)
    old = rng.standard_normal((7, 3)).astype(dtype)
    out = cp.array(old, order=layout)
    start = len(cupy_standin.CALLS)
    got = backend.matmul_acc(cp.asarray(a), cp.asarray(b), out)
    assert got is out
    want = old + a @ b
    np.testing.assert_allclose(got.get(), want, rtol=5e-3 if dtype == np.float16 else 1e-6)
    gemm = [c for c in cupy_standin.CALLS[start:] if c[0] == "cublas.gemm" and c[2] == (7, 3, 5)]
    assert bool(gemm) == (dtype != np.float16)  # float16: cupy.cublas.gemm does not take it


def test_a_missing_nvrtc_is_a_kernel_build_error_with_the_hint(backend, monkeypatch):
    from gpudense.backends.cuda import KernelBuildError
    from cupy_standin import device

    def no_nvrtc(self, name):
        raise RuntimeError('Failure finding "libnvrtc.so.13": No such file')  # as cuda.pathfinder raises it

    monkeypatch.setattr(device.RawModule, "get_function", no_nvrtc)
    with pytest.raises(KernelBuildError, match=r"libnvrtc.*pip install 'gpudense\[cuda13\]'"):
        backend.kernels()


def test_a_compile_error_carries_the_compilers_log(backend, monkeypatch):
    from gpudense.backends.cuda import KernelBuildError, loader

    monkeypatch.setattr(loader, "kernel_source",
                        lambda name: ('extern "C" __global__ void bias_grad_pass1_f64( { oops', "/x/broken.cu"))
    with pytest.raises(KernelBuildError) as info:
        backend.kernels()
    assert "broken.cu" in str(info.value) and "broken.cu" in info.value.log


def test_kernels_are_built_once_per_device(backend):
    assert backend.kernels() is backend.kernels(0)
    assert sorted(backend.kernels().functions) == sorted(__import__("gpudense.backends.cuda",
                                                                    fromlist=["ENTRY_POINTS"]).ENTRY_POINTS)


def test_nvtx_ranges_go_to_cupy_cuda_nvtx_without_the_nvtx_package(backend, monkeypatch):
    from gpudense import _nvtx

    monkeypatch.setitem(sys.modules, "nvtx", None)
    monkeypatch.setattr(_nvtx, "_chosen", None)
    start = len(cupy_standin.CALLS)
    with backend.nvtx_range("gpudense.forward"):
        pass
    assert cupy_standin.CALLS[start:] == [("nvtx.push", "gpudense.forward"), ("nvtx.pop",)]
    assert backend.describe()["nvtx"] == "cupy.cuda.nvtx"
    monkeypatch.setattr(_nvtx, "_chosen", None)


def test_describe_synchronize_and_library_facts(backend):
    from gpudense.backends.cuda import library_facts

    assert backend.describe()["device"].startswith("0: CuPy stand-in (host) (sm_90, 4 SMs)")
    backend.synchronize()
    assert cupy_standin.CALLS[-1] == ("stream.synchronize",)
    assert library_facts() == {"cupy": "14.2.0", "cuda_runtime": "13.0", "cuda_driver": "13.0"}


@pytest.mark.parametrize("rule, kwargs", [("adam", {"lr": 1e-2}), ("sgd", {"lr": 0.1, "momentum": 0.9})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_update_runs_as_an_elementwise_kernel_with_the_cpu_paths_bits(cp, rng, rule, kwargs, dtype):
    """The CuPy backend's optimizer step is the ElementwiseKernel (run by the host build): the CPU step's bits."""
    from gpudense.optim import make_optimizer
    from small_models import Params

    p0 = rng.standard_normal(300).astype(dtype)
    grads = [rng.standard_normal(300).astype(dtype) for _ in range(3)]
    results = []
    start = len(cupy_standin.CALLS)
    for xp in (np, cp):
        model = Params(x=xp.asarray(p0.copy()))
        opt = make_optimizer(rule, model, **kwargs)
        for g in grads:
            model.grads["x"] = xp.asarray(g.copy())
            opt.step()
        results.append(model.params["x"] if xp is np else model.params["x"].get())
    np.testing.assert_array_equal(results[1], results[0])
    assert any(c[0] == "elementwise" for c in cupy_standin.CALLS[start:])


def test_use_device_takes_the_ranks_gpu_modulo_the_count(cp, monkeypatch):
    from cupy_standin import device

    from gpudense.backends.cuda.nccl_engine import nccl_unavailable_reason, use_device

    monkeypatch.setattr(device, "N_DEVICES", 2)
    try:
        assert use_device(3) == (1, 2) and cp.cuda.runtime.getDevice() == 1
    finally:
        cp.cuda.Device(0).use()
    assert nccl_unavailable_reason() is None


def test_use_device_without_a_usable_device_says_why(cp, monkeypatch):
    from cupy_standin import device

    from gpudense.backends import BackendUnavailableError
    from gpudense.backends.cuda.nccl_engine import use_device

    monkeypatch.setattr(device, "N_DEVICES", 0)
    with pytest.raises(BackendUnavailableError, match="reports no device"):
        use_device(0)

    def broken():
        raise device.CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    monkeypatch.setattr(device.runtime, "getDeviceCount", broken)
    with pytest.raises(BackendUnavailableError, match="no CUDA device is usable: cudaErrorNoDevice"):
        use_device(0)


def test_the_engine_hands_nccl_its_own_datatype_and_refuses_others(cp):
    from cupy_standin import device

    from gpudense.backends.cuda.nccl_engine import NcclEngine

    engine = NcclEngine.__new__(NcclEngine)  # its collectives' checks, without MPI
    engine._cupy, engine._nccl = cp, device.nccl
    assert engine._datatype(cp.zeros(3, np.float32)) == device.nccl.NCCL_FLOAT32
    assert engine._datatype(cp.zeros(3, np.float16)) == device.nccl.NCCL_FLOAT16
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    from gpudense._checks import float_dtype

    assert engine._datatype(cp.zeros(3, float_dtype("bfloat16"))) == device.nccl.NCCL_BFLOAT16 == 9
    with pytest.raises(TypeError, match="NCCL collectives take .* got complex64"):
        engine._datatype(cp.zeros(3, np.complex64))
    with pytest.raises(ValueError, match="C-contiguous"):
        engine._datatype(cp.zeros((3, 4), np.float32)[:, ::2])
    assert engine.version() == "2.27.7"
    engine.synchronize()
    assert cupy_standin.CALLS[-1] == ("stream.synchronize",)


GPU_TEST_FILES = ["tests/cuda/test_gpu.py", "tests/cuda/test_gpu_fused.py", "tests/training/test_gpu_optim.py",
                  "tests/training/test_gpu_train.py"]


@pytest.mark.parametrize("path", GPU_TEST_FILES)
def test_gpu_tests_pass_on_the_standin(path):
    """The GPU tests, run on the stand-in: everything passes; skipped only what needs more device memory."""
    env = {k: v for k, v in os.environ.items() if k != "GPUDENSE_BACKEND"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "cupy_standin.plugin", "-q", "-p", "no:cacheprovider",
                          "-rs", path], cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
    tail = res.stdout[-3000:]
    assert res.returncode == 0, tail + res.stderr[-2000:]
    skipped = [line for line in res.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("GiB" in line for line in skipped), skipped


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_digits_training_on_the_standin_agrees_with_numpy(cp, dtype):
    """`gpudense train` on digits, 2 epochs, GELU (the fused kernels): CuPy's losses and accuracy as NumPy's."""
    import io

    from gpudense.cli.train import parse_args, train

    pytest.importorskip("sklearn", reason="the digits set comes with scikit-learn")
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    common = ["--quiet", "--epochs", "2", "--seed", "0", "--dtype", dtype, "--dataset", "digits",
              "--activation", "gelu", "--distributed", "off"]
    cpu = train(parse_args(["--backend", "numpy", *common]), out=io.StringIO())
    start = len(cupy_standin.CALLS)
    gpu = train(parse_args(["--backend", "cupy", *common]), out=io.StringIO())
    assert gpu.model.backend.name == "cupy" and cpu.model.backend.name == "numpy"
    launched = {c[1] for c in cupy_standin.CALLS[start:] if c[0] == "launch"}
    suffix = "f32" if dtype == "float32" else "bf16"
    assert {f"bias_act_gelu_{suffix}", f"act_bias_grad_gelu_{suffix}"} <= launched, launched
    # float32: summation orders differ (the GPU tests allow 1e-3); bfloat16: a parameter may round to
    # the neighbouring bfloat16 value, which moves the loss by a few 2**-8.
    rel = 1e-3 if dtype == "float32" else 4 * 2.0**-8
    assert len(gpu.history.loss) == 2
    for epoch, (a, b) in enumerate(zip(cpu.history.loss, gpu.history.loss), start=1):
        assert abs(a - b) <= rel * abs(a), f"epoch {epoch}: numpy loss {a}, cupy loss {b}"
    assert abs(cpu.test_accuracy - gpu.test_accuracy) <= (1 if dtype == "float32" else 4) / 360 + 1e-12
