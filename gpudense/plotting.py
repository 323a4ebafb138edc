"""matplotlib, imported only when a plot is asked for (it is an optional dependency)."""

from __future__ import annotations

from typing import Any

__all__ = ["import_pyplot"]


def import_pyplot(option: str = "--plot", extra: str = "train") -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Args:
        option: What asked for the plot, named in the error (e.g. ``"--plot"``).
        extra: The gpudense extra that installs matplotlib, named in the error.

    Raises:
        RuntimeError: matplotlib is not installed (one line: what needs it, what to install).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(f"{option} needs matplotlib ({exc}); install it with pip install 'gpudense[{extra}]'") from exc
    return plt
