"""The facts ``gpudense info`` prints: which backend "auto" picks, why, and the versions in play."""

from __future__ import annotations

import platform
import warnings

import numpy as np


def collect() -> dict[str, str]:
    """The facts ``gpudense info`` prints, as a dict (also used by the benchmarks).

    Versions of gpudense, Python, NumPy and the platform; which backend
    ``"auto"`` picks and why; CuPy's and CUDA's versions (from
    :func:`gpudense.backends.cuda.library_facts`, which needs no device);
    then the chosen backend's own facts (:meth:`~gpudense.backends.Backend.describe`:
    the CPU, or the CUDA device).

    Returns:
        An ordered ``{name: value}`` dict of strings.

    Example:
        >>> facts = collect()
        >>> facts["backend"] in ("numpy", "cupy")
        True
    """
    from gpudense import __version__
    from gpudense.backends import GpudenseFallbackWarning, auto_backend_reason, get_backend
    from gpudense.backends.cuda import library_facts

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
    facts.update(library_facts())  # reported whichever backend was chosen
    facts.update(get_backend(name).describe())
    return facts
