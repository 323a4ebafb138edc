"""``gpudense info``: which backend "auto" picks, why, and the versions in play."""

from __future__ import annotations

import argparse
import platform
import sys
import warnings

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``gpudense info`` takes no options."""


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
    facts.update(get_backend(name).describe())
    return facts


def run(args: argparse.Namespace) -> int:
    facts = collect()
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    sys.stdout.flush()
    return 0
