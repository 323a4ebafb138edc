"""The facts ``gpudense info`` prints: which backend "auto" picks, why, and the versions in play."""

from __future__ import annotations

import platform
import warnings

import numpy as np


def collect() -> dict[str, str]:
    """The facts ``gpudense info`` prints, as a dict (also used by the benchmarks)."""
    from gpudense import __version__
    from gpudense.backends import auto_backend_reason, get_backend

    from gpudense.backends import GpudenseFallbackWarning

    with warnings.catch_warnings():  # the reason is printed below; no need to warn too
        warnings.simplefilter("ignore", GpudenseFallbackWarning)
        name, reason = auto_backend_reason()
    facts = {
        "gpudense": __version__,
        "backend": name,
        "reason": reason,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    try:
        import cupy  # only to report its version; "auto" made its own decision above
    except ImportError:
        facts["cupy"] = "not installed"
    else:
        facts["cupy"] = cupy.__version__
        try:
            facts["cuda_runtime"] = _cuda_version(cupy.cuda.runtime.runtimeGetVersion())
            driver = cupy.cuda.runtime.driverGetVersion()
            facts["cuda_driver"] = _cuda_version(driver) if driver else "none (no NVIDIA driver)"
        except Exception as exc:  # a broken CUDA install: report it, don't fail
            facts["cuda_runtime"] = f"unknown ({exc})"
    facts.update(get_backend(name).describe())
    return facts


def _cuda_version(v: int) -> str:
    """CUDA's integer version 13020 as "13.2"."""
    return f"{v // 1000}.{v % 1000 // 10}"
