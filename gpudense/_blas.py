"""How long OpenBLAS's idle worker threads spin, set before NumPy loads OpenBLAS.

After each threaded product, OpenBLAS keeps its worker threads spinning for
``2**OPENBLAS_THREAD_TIMEOUT`` cycles (28 by default: about 0.1 s) before they
sleep. During a training step that spin occupies the cores the optimizer's
own threads would use right after the backward pass. The ``gpudense``
command (its ``main``, before a subcommand loads NumPy) therefore sets
``OPENBLAS_THREAD_TIMEOUT=18`` (about 0.1 ms: the products of one step still
follow each other within it, so they find their threads awake) when the
variable is unset; OpenBLAS reads it once, when NumPy loads it. A value set
by the user is kept. ``import gpudense`` sets nothing: a program of one's own
sets the variable in its environment, before Python starts
(docs/environment.md). :func:`short_spin` tells whether the spin in effect is
short, which is when an optimizer step gains from more than one thread (see
``Optimizer.threads``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gpudense._env import OPENBLAS_THREAD_TIMEOUT as SPIN_VARIABLE
from gpudense._env import openblas_thread_timeout

#: The value the ``gpudense`` command sets (when unset): 2**18 cycles, about 0.1 ms.
SHORT_SPIN = 18


def shorten_openblas_spin() -> None:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` to :data:`SHORT_SPIN` unless it is set or NumPy is loaded.

    For a program's ``main`` (the ``gpudense`` command's), before anything
    imports NumPy; the library never calls it.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault(SPIN_VARIABLE, str(SHORT_SPIN))


def short_spin(value: str | None = ...) -> bool:  # type: ignore[assignment]
    """Whether OpenBLAS's idle threads spin briefly: ``OPENBLAS_THREAD_TIMEOUT`` (or ``value``) is at most 20.

    The variable counts as OpenBLAS read it when NumPy loaded it: set it
    before that, not later.

    Example:
        >>> short_spin("18"), short_spin("28"), short_spin(None), short_spin("x")
        (True, False, False, False)
    """
    if value is ...:
        value = openblas_thread_timeout()
    try:
        return value is not None and int(value) <= 20
    except ValueError:
        return False


def blas_thread_count() -> int | None:
    """The most threads any BLAS pool of this process runs with now (threadpoolctl), or None without it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [int(p.get("num_threads") or 1) for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts, default=None)


def step_threads(backend: Any) -> int:
    """The threads an optimizer step on ``backend`` should use now (``Optimizer.threads``).

    As many as the BLAS products run on, on the NumPy backend where
    OpenBLAS's idle threads sleep soon enough to leave the cores to the step
    (:func:`short_spin`); else one. ``gpudense train`` sets it;
    ``docs/training.md`` gives the measured effect.

    Example:
        >>> class OnGpu:  # a step on a GPU is one kernel: one thread drives it
        ...     name = "cupy"
        >>> step_threads(OnGpu())
        1
    """
    if getattr(backend, "name", None) != "numpy" or not short_spin():
        return 1
    return blas_thread_count() or 1
