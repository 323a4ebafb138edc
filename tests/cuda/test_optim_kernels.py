"""The optimizer kernels (gpudense.backends.cuda.optim_kernels) without a GPU.

Two checks that need no device: every kernel body, wrapped in a plain
``__global__`` function with the types CuPy would bind, compiles with nvcc for
sm_80 and sm_90; and the same body, compiled for the host with g++ (each
float operation rounded on its own, as the kernel's PTX does), gives
bit for bit the state and parameters of the optimizers' CPU path, step after
step, subnormal inputs and the periodic flush included. The GPU tests compare
the kernels on a device with the CPU path again.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpudense.backends.cuda.optim_kernels import SPECS, preamble
from gpudense.optim import SGD, Adam, AdamW
from gpudense.optim.flatstate import FLUSH_PERIOD

from kernel_build import elementwise_params, elementwise_wrapper
from small_models import Params

NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if Path(p).is_file()), None
)
GXX = shutil.which("g++")

def _params(text):
    return elementwise_params(text)


def wrapper(spec, t, g, p, *, device):
    """C++ source running ``spec``'s body once per element, as CuPy's ElementwiseKernel does."""
    return elementwise_wrapper(spec.in_params, spec.out_params, spec.operation, spec.name, t, g, p, device=device,
                               preamble=preamble())


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (not on PATH or in /usr/local/cuda/bin)")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_optimizer_kernel_compiles_without_spills(tmp_path, arch):
    # one translation unit, each kernel in a namespace with its own T, G and P (CuPy binds them per call)
    unit, names = ["#include <cuda_fp16.h>", preamble()], []
    for (_, _, master), spec in SPECS.items():
        for t in ("float", "double"):
            g = "__half" if master else t
            head = f"typedef {t} T; typedef {g} G; typedef __half P;\n"
            src = wrapper(spec, t, g, "__half", device=True)
            src = src.replace("#include <cuda_fp16.h>\n", "").replace(preamble(), "").replace(head, "")
            src = src.replace(f'extern "C" __global__ void {spec.name}(', f"__global__ void {spec.name}_{t}(")
            unit.append(f"namespace n_{spec.name}_{t} {{\n{head}{src}}}\n")
            names.append(f"{spec.name}_{t}")
    path = tmp_path / "optim.cu"
    path.write_text("\n".join(unit))
    res = subprocess.run([NVCC, "-cubin", f"-arch={arch}", "-ftz=true", "-Xptxas", "-v", "-o",
                          str(tmp_path / "k.cubin"), str(path)], capture_output=True, text=True, timeout=300)
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"nvcc failed:\n{log}"
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert log.count("Compiling entry function") == len(frames) == len(names), log
    assert all(f == ("0", "0", "0") for f in frames), f"spills or stack frames:\n{log}"


def _host_library(tmp_path, spec, t):
    if GXX is None:
        pytest.skip("g++ is not installed: the host run of the optimizer kernels needs it")
    src = tmp_path / f"{spec.name}_{t}.cpp"
    src.write_text(wrapper(spec, t, t, t, device=False))
    lib = tmp_path / f"{spec.name}_{t}.so"
    res = subprocess.run([GXX, "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-o", str(lib),
                          str(src)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return getattr(ctypes.CDLL(str(lib)), spec.name)


def _inputs(dtype, n, rng):
    p = rng.standard_normal(n).astype(dtype)
    tiny = np.finfo(dtype).tiny
    p[:8] = [tiny * 0.5, -tiny * 0.25, tiny, 0.0, -0.0, tiny * 3, 1e-3, -2.0]  # subnormal and edge values
    grads = []
    for step in range(FLUSH_PERIOD + 3):
        g = rng.standard_normal(n).astype(dtype)
        g[8:40] = 0.0  # dead units: m decays towards the subnormal range
        g[40:48] = tiny * (step + 1)  # gradients whose moments start subnormal
        grads.append(g)
    return p, grads


@pytest.mark.parametrize("flush", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factory", [
    lambda m: Adam(m, lr=1e-2, betas=(0.5, 0.9)),
    lambda m: Adam(m, lr=1e-2, weight_decay=0.1),
    lambda m: AdamW(m, lr=1e-2, weight_decay=0.1),
    lambda m: SGD(m, lr=0.1),
    lambda m: SGD(m, lr=0.1, weight_decay=0.01),
    lambda m: SGD(m, lr=0.05, momentum=0.5),
    lambda m: SGD(m, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
], ids=["adam", "adam-l2", "adamw", "sgd", "sgd-l2", "sgd-momentum", "sgd-nesterov"])
def test_kernel_body_gives_the_cpu_paths_bits(tmp_path, dtype, factory, flush):
    rng = np.random.default_rng(3)
    n = 1000
    p0, grads = _inputs(dtype, n, rng)
    model = Params(x=p0.copy())
    opt = factory(model)
    opt.flush_subnormals = flush
    slots = tuple(opt.SLOTS)
    spec = SPECS[(opt.RULE, slots, False)]
    t_name = "float" if dtype == np.float32 else "double"
    kernel = _host_library(tmp_path, spec, t_name)
    w = p0.copy()
    state = {s: np.zeros(n, dtype) for s in slots}
    c_scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    for step, g in enumerate(grads, start=1):
        model.grads["x"] = g.copy()
        opt.step()
        scalars = opt._scalars(step, np.dtype(dtype))
        args = [ctypes.c_long(n), ctypes.c_void_p(g.ctypes.data)]
        for kind, name in _params(spec.in_params)[1:]:
            args.append(ctypes.c_int(scalars[name]) if kind == "int32" else c_scalar(scalars[name]))
        arrays = {"w": w, **state}
        args += [ctypes.c_void_p(arrays[name].ctypes.data) for _, name in _params(spec.out_params)]
        kernel(*args)
        np.testing.assert_array_equal(w, model.params["x"], err_msg=f"parameters differ at step {step}")
        for s in slots:
            np.testing.assert_array_equal(state[s], opt.state[s]["x"], err_msg=f"{s} differs at step {step}")
    tiny = np.finfo(dtype).tiny
    for s in slots if flush else ():  # the flush left no subnormal number in the state
        a = np.abs(opt.state[s]["x"])
        assert not ((a > 0) & (a < tiny)).any(), s


def test_specs_cover_every_rule_and_slot_set():
    assert sorted(SPECS) == sorted([
        ("adam", ("m", "v"), False), ("adam", ("m", "v"), True),
        ("sgd", ("momentum",), False), ("sgd", ("momentum",), True),
        ("sgd", (), False), ("sgd", (), True),
    ])
    for (rule, slots, master), spec in SPECS.items():
        assert spec.array_names() == ["w", *slots] + (["p_low"] if master else [])
        assert spec.in_params.startswith("G g, ")
