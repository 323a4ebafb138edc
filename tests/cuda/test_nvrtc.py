"""Every kernels/*.cu compiles through NVRTC exactly as CuPy's RawModule compiles it, for sm_80 and sm_90.

NVRTC needs no GPU and no driver. The source is what the loader hands to
``cupy.RawModule`` (``module_code``: the file and its headers, after ``#line`` directives) and the options
are the loader's ``NVRTC_OPTIONS`` as CuPy completes them: the test calls
CuPy's own ``compile_with_cache`` with the arguments ``RawModule`` passes
(no CuPy headers prepended, the NVRTC backend), so CuPy adds its include
paths, ``--std=c++17``, ``-ftz=true``, the ``-arch`` option and
``--device-as-default-execution-space`` itself; nothing is copied by hand.
Two things are bent, neither of which changes what is compiled: the
architecture is given (there is no device to ask; CuPy's own rule turns it
into ``-arch=sm_XX``), and CuPy's in-memory cache mode is set so that every
run compiles. The build is stopped after NVRTC, before CuPy loads the
binary (loading needs a driver).

A build with an error fails. The same options plus ``--ptxas-options=-v``
(which changes no code) report registers and spills per entry point; a
spill or stack frame fails. Skipped, with the reason, where CuPy or the
NVRTC library is missing (``pip install 'gpudense[cuda13]'`` brings both).

NVRTC 12 builds the same files too (CUDA 12 is a target as much as 13): the
options CuPy assembled, with CuPy's CUDA include folder swapped for the CUDA 12
runtime's, given to the nvidia-cuda-nvrtc-cu12 wheel's library through ctypes
(the test extra installs it on Linux).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kernel_build import parse_ptxas

cupy = pytest.importorskip("cupy", reason="CuPy is not installed: the NVRTC build check needs it")

from cupy.cuda import compiler  # noqa: E402

from gpudense.backends.cuda.loader import KERNEL_FILES, NVRTC_OPTIONS, module_code  # noqa: E402

KERNELS = sorted((Path(__file__).resolve().parents[2] / "kernels").glob("*.cu"))
_NVRTC_PROGRAM = compiler._NVRTCProgram  # CuPy's NVRTC program, before any test replaces it
ARCHS = ["80", "90"]


def _nvrtc_version():
    from cupy_backends.cuda.libs import nvrtc

    try:
        return nvrtc.getVersion()
    except Exception as exc:  # the library itself is missing or broken
        return exc


pytestmark = pytest.mark.skipif(
    isinstance(_nvrtc_version(), Exception),
    reason=f"the NVRTC library cannot be loaded ({_nvrtc_version()}); pip install 'gpudense[cuda13]' brings it",
)


class _Compiled(Exception):
    """Raised once NVRTC has compiled the kernel source, to stop CuPy before it loads the binary."""

    def __init__(self, options, cubin):
        super().__init__("compiled")
        self.options, self.cubin = options, cubin


def stop_after_nvrtc(monkeypatch):
    """CuPy's compile path as it is, up to NVRTC's build, which raises _Compiled with the options and the cubin."""

    class Recording(_NVRTC_PROGRAM):
        def compile(self, options=(), log_stream=None):
            result = super().compile(options, log_stream)
            if self.src:  # CuPy also compiles an empty program, to learn NVRTC's version
                raise _Compiled(tuple(options), result[0])
            return result

    monkeypatch.setattr(compiler, "_NVRTCProgram", Recording)
    # CuPy's rule for the -arch option, without its per-device memo (which asks the driver).
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc",
                        compiler._get_arch_for_options_for_nvrtc.__wrapped__)
    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")


def build_as_cupy_does(monkeypatch, name, arch):
    """``(options, cubin, code)``: NVRTC's build of kernel file ``name`` through CuPy's RawModule path.

    ``code`` is the source CuPy was given: the file with its headers inlined (``module_code``).
    """
    import cupy._core.core as core

    code, _ = module_code(name)
    stop_after_nvrtc(monkeypatch)
    try:
        # The arguments cupy.RawModule(code=..., options=...) passes, plus the architecture.
        core.compile_with_cache(code, NVRTC_OPTIONS, arch=arch, prepend_cupy_headers=False, backend="nvrtc",
                                translate_cucomplex=False, enable_cooperative_groups=False,
                                name_expressions=None, log_stream=None, jitify=False)
    except _Compiled as done:
        return done.options, done.cubin, code
    raise AssertionError("CuPy did not compile the source with NVRTC")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("path", KERNELS, ids=[p.name for p in KERNELS])
def test_kernel_compiles_with_nvrtc_as_cupy_builds_it(monkeypatch, path, arch):
    from cupy_backends.cuda.libs import nvrtc

    options, cubin, code = build_as_cupy_does(monkeypatch, path.name, arch)
    # What CuPy added is there, and ours too, in the order RawModule passes them.
    assert f"-arch=sm_{arch}" in options and "-ftz=true" in options
    assert "--device-as-default-execution-space" in options
    assert options[options.index(NVRTC_OPTIONS[0]):][: len(NVRTC_OPTIONS)] == NVRTC_OPTIONS
    assert len(cubin) > 0
    # Registers and spills: the same build, ptxas verbose.
    program = _NVRTC_PROGRAM(code, path.name)
    program.compile(options + ("--ptxas-options=-v",))
    report = parse_ptxas(nvrtc.getProgramLog(program.ptr))
    assert sorted(report) == sorted(KERNEL_FILES[path.name]), sorted(report)
    bad = {n: r for n, r in report.items() if r["spill_stores"] or r["spill_loads"] or r["stack"]}
    assert not bad, f"{path.name} (sm_{arch}, NVRTC) spills or uses a stack frame: {bad}"
    assert all(r["registers"] <= 128 for r in report.values()), report  # __launch_bounds__(256): 2+ blocks/SM


def test_a_broken_kernel_fails_the_nvrtc_build(monkeypatch):
    """The same path reports a compile error, with NVRTC's log naming the file."""
    broken = ('#line 1 "/x/broken.cu"\nextern "C" __global__ void k( { oops', "/x/broken.cu")
    monkeypatch.setitem(globals(), "module_code", lambda name: broken)
    with pytest.raises(compiler.CompileException) as info:
        build_as_cupy_does(monkeypatch, "broken.cu", "90")
    assert "broken.cu" in str(info.value)


def _nvrtc_12():
    """``(libnvrtc.so.12, CUDA 12 include folder)`` from the test extra's wheels, or None."""
    for folder in map(Path, sys.path):
        library = folder / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
        include = folder / "nvidia" / "cuda_runtime" / "include"
        if library.is_file() and (include / "cuda_fp16.h").is_file():
            return library, include
    return None


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("path", KERNELS, ids=[p.name for p in KERNELS])
def test_kernel_compiles_with_nvrtc_12_as_cupy_for_cuda_12_builds_it(monkeypatch, path, arch):
    """NVRTC 12 builds every entry point with the options CuPy assembles, its CUDA include folder CUDA 12's.

    CuPy built for CUDA 12 passes the same options with the CUDA 12 runtime's
    include folder (where cuda.pathfinder finds ``cuda_runtime.h``); NVRTC 12
    is loaded from the nvidia-cuda-nvrtc-cu12 wheel through ctypes.
    """
    from cuda.pathfinder import find_nvidia_header_directory
    from cupy_backends.cuda.libs import nvrtc

    from kernel_build import nvrtc_build, nvrtc_version

    found = _nvrtc_12()
    if found is None:
        pytest.skip("NVRTC 12 is not installed: the test extra brings nvidia-cuda-nvrtc-cu12 on Linux")
    library, include = found
    assert nvrtc_version(library)[0] == 12
    options, _, code = build_as_cupy_does(monkeypatch, path.name, arch)
    cuda_include = "-I" + find_nvidia_header_directory("cudart")
    assert options.count(cuda_include) == 1, options
    options_12 = tuple(f"-I{include}" if o == cuda_include else o for o in options)
    result, log = nvrtc_build(library, code, path.name, options_12 + ("--ptxas-options=-v",))
    assert result == 0, f"{path.name} (sm_{arch}) does not compile with NVRTC 12:\n{log}"
    report_12 = parse_ptxas(log)
    program = _NVRTC_PROGRAM(code, path.name)
    program.compile(options + ("--ptxas-options=-v",))
    report = parse_ptxas(nvrtc.getProgramLog(program.ptr))
    assert report_12 and sorted(report_12) == sorted(report)
    bad = {n: r for n, r in report_12.items() if r["spill_stores"] or r["spill_loads"] or r["stack"]}
    assert not bad, f"{path.name} (sm_{arch}, NVRTC 12) spills or uses a stack frame: {bad}"
    assert all(r["registers"] <= 128 for r in report_12.values()), report_12


# --------------------------------------------------------------------------
# The optimizer kernels: CuPy's own ElementwiseKernel source, through NVRTC
# --------------------------------------------------------------------------


def elementwise_source(spec, t, g):
    """The CUDA source CuPy 14 generates for ``spec`` called as OptimizerKernels.update calls it.

    ``ElementwiseKernel.__call__`` needs a device, so its steps are taken one by
    one with CuPy's own functions: ``_decide_params_type`` binds T, G (and P)
    from the arrays' dtypes (the scalars give none), the argument infos are
    those ``_get_arginfos`` makes for 1-D C-contiguous arrays, CScalars of the
    decided types and the indexer, and ``_get_elementwise_kernel_code`` writes
    the source (cupy/_core/_kernel.pyx). Reading these private functions is
    for this test only.
    """
    import numpy as np
    from cupy._core import _carray, _kernel, _scalar

    from gpudense.backends.cuda.optim_kernels import preamble

    kernel = cupy.ElementwiseKernel(spec.in_params, spec.out_params, spec.operation, spec.name,
                                    preamble=preamble())
    n_in = len(spec.in_params.split(","))
    outs = tuple({"T": t, "P": g}[p.split()[0]] for p in spec.out_params.split(","))
    in_types, out_types, type_map = kernel._decide_params_type((g,) + (None,) * (n_in - 1), outs)
    nd, indexer, scalar = 1, 2, 3  # cupy/_core/_kernel.pxd: _ArgKind
    infos = [_kernel._ArgInfo(nd, cupy.ndarray, in_types[0], 1, True, True)]
    infos += [_kernel._ArgInfo(scalar, _scalar.CScalar, d, 0, True, True) for d in in_types[1:]]
    infos += [_kernel._ArgInfo(nd, cupy.ndarray, d, 1, True, True) for d in out_types]
    infos.append(_kernel._ArgInfo(indexer, _carray.Indexer, None, 1, True, True))
    assert np.dtype(in_types[0]) == g and np.dtype(out_types[0]) == t
    return _kernel._get_elementwise_kernel_code(tuple(infos), type_map, kernel.params, kernel.operation,
                                                kernel.name, kernel.preamble)


def _optimizer_cases():
    import numpy as np

    cases = []
    for (rule, slots, master), spec in sorted(SPECS.items()):
        for t in ("float32", "float64"):
            lows = ("float16", "bfloat16") if master else (t,)
            for g in lows:
                cases.append(pytest.param(spec, np.dtype(t), _dtype(g), id=f"{spec.name}-{t}-{g}"))
    return cases


def _dtype(name):
    import numpy as np

    if name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


from gpudense.backends.cuda.optim_kernels import SPECS  # noqa: E402


@pytest.mark.parametrize("spec, t, g", _optimizer_cases())
def test_cupys_own_source_of_every_optimizer_kernel_compiles_with_nvrtc(monkeypatch, spec, t, g):
    """CuPy's generated source, compiled as ElementwiseKernel compiles it (compile_with_cache, CuPy's headers)."""
    import cupy._core.core as core

    code = elementwise_source(spec, t, g)
    assert spec.operation.strip().splitlines()[0] in code and "mul_rn" in code

    stop_after_nvrtc(monkeypatch)
    with pytest.raises(_Compiled) as done:
        core.compile_with_cache(code, (), arch="90")  # _get_simple_elementwise_kernel_from_code's call
    assert "-ftz=true" in done.value.options and len(done.value.cubin) > 0
