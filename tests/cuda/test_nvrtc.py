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
"""

from __future__ import annotations

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


def build_as_cupy_does(monkeypatch, name, arch):
    """``(options, cubin)``: NVRTC's build of kernel file ``name`` through CuPy's RawModule path."""
    import cupy._core.core as core

    code, _ = module_code(name)

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
