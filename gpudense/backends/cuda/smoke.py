"""A seconds-long check that NVRTC and the CUDA headers CuPy compiles with work on this machine."""

from __future__ import annotations

__all__ = ["SMOKE_SOURCE", "compile_smoke"]

SMOKE_SOURCE = r"""
#include <cuda_fp16.h>
extern "C" __global__ void gpudense_smoke(float* out) { out[0] = __half2float(__float2half(1.5f)); }
"""


def compile_smoke() -> str | None:
    """None when NVRTC and the CUDA headers CuPy compiles with are usable here, else why not (one line).

    Compiles a ten-line kernel that includes ``cuda_fp16.h`` through
    ``cupy.RawModule`` and runs a float16 element-wise CuPy operation (which
    CuPy also compiles with NVRTC, against the CUDA headers), on the current
    device. Takes a second or two, so a GPU run can stop at once with the
    cause instead of failing test by test.
    """
    try:
        import cupy as cp
    except ImportError as exc:
        return f"CuPy is not importable ({exc}); install gpudense[cuda13] or gpudense[cuda12]"
    try:
        out = cp.zeros(1, cp.float32)
        cp.RawModule(code=SMOKE_SOURCE).get_function("gpudense_smoke")((1,), (1,), (out,))
        half = (cp.ones(4, cp.float16) * 2).sum()
        if float(out[0]) != 1.5 or float(half) != 8.0:
            return f"the smoke kernels ran but gave {float(out[0])} and {float(half)} (expected 1.5 and 8.0)"
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        lowered = text.lower()
        if "nvrtc" in lowered and ("load" in lowered or "not found" in lowered or "cannot" in lowered):
            cause = "the NVRTC library is missing: pip install 'cuda-toolkit[nvrtc]==13.*' (or a CUDA toolkit)"
        elif "cuda_fp16.h" in lowered or "could not open source file" in lowered or "cannot open" in lowered:
            cause = ("the CUDA headers are missing (cuda_fp16.h): install the CUDA toolkit or the "
                     "nvidia-cuda-runtime / nvidia-cuda-cccl wheels, or set CUDA_PATH")
        else:
            cause = "compiling or running a CUDA kernel failed"
        return f"{cause}: {type(exc).__name__}: {text}"
    return None
