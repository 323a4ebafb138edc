"""The compile smoke test: in seconds, whether NVRTC and the CUDA headers CuPy compiles with work here.

Run by bench/gpu_validation.sh before anything else, or on its own from a
plain checkout:

    PYTHONPATH=$PWD python3 bench/compile_smoke.py

Exit status 0 and one line when they work; else one line on stderr saying
what is missing, and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

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

    Example:
        >>> problem = compile_smoke()  # on a machine without CuPy or a GPU: the reason
        >>> problem is None or ("\\n" not in problem and len(problem) > 0)
        True
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
        elif "cudaerrornodevice" in lowered or "insufficientdriver" in lowered or "no cuda-capable" in lowered:
            cause = "no usable CUDA device or driver here"
        else:
            cause = "compiling or running a CUDA kernel failed"
        return f"{cause}: {type(exc).__name__}: {text}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    problem = compile_smoke()
    if problem is not None:
        print(f"compile smoke test failed: {problem}", file=sys.stderr)
        return 1
    print("compile smoke test: NVRTC and the CUDA headers work")
    return 0


if __name__ == "__main__":
    sys.exit(main())
