"""Every environment variable gpudense reads, read here, when it is needed (never at import).

docs/environment.md lists them in a table: name, meaning, values. Boolean
variables take ``1``, ``true``, ``yes``, ``on`` (on) and ``0``, ``false``,
``no``, ``off`` or empty (off), in any case; anything else is an error naming
the variable and these values, never a silent guess.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")

#: ``numpy`` or ``cupy``: what ``backend="auto"`` means (unset or ``auto``: decide by the machine).
BACKEND = "GPUDENSE_BACKEND"
#: Boolean: keep copies of the arrays a forward pass saves and compare them at backward (:mod:`gpudense.saved`).
CHECK_SAVED = "GPUDENSE_CHECK_SAVED"
#: Boolean: the command line (and a failing MPI rank) prints the traceback of an error, not one line.
DEBUG = "GPUDENSE_DEBUG"
#: Boolean, or unset to ask MPI: whether MPI takes CUDA device memory.
MPI_CUDA_AWARE = "GPUDENSE_MPI_CUDA_AWARE"
#: CuPy's own switch for TF32 products, read as CuPy reads it: unset, empty or ``0`` off, else on.
CUPY_TF32 = "CUPY_TF32"
#: OpenBLAS's idle spin, log2 of cycles; read by OpenBLAS when NumPy loads it.
OPENBLAS_THREAD_TIMEOUT = "OPENBLAS_THREAD_TIMEOUT"
#: Variables in which launchers give each process the number of processes they started:
#: MPICH's and Intel MPI's hydra and Slurm's PMI (PMI_SIZE), Open MPI, MVAPICH2, Slurm's srun.
LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")


def text(name: str, environ: Any = None) -> str:
    """The value of ``name`` with surrounding blanks removed; ``""`` when unset.

    Example:
        >>> text("PATH_THAT_IS_NOT_SET", {"PATH_THAT_IS_NOT_SET": " x "})
        'x'
    """
    return str((os.environ if environ is None else environ).get(name, "")).strip()


def flag(name: str, environ: Any = None) -> bool:
    """The boolean variable ``name``: on for 1/true/yes/on, off for 0/false/no/off, empty or unset.

    Raises:
        ValueError: any other value, naming the variable and the accepted values.

    Example:
        >>> flag("GPUDENSE_DEBUG", {"GPUDENSE_DEBUG": "Off"}), flag("GPUDENSE_DEBUG", {"GPUDENSE_DEBUG": "YES"})
        (False, True)
    """
    value = text(name, environ).lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{name}={text(name, environ)!r} in the environment: expected 1, true, yes or on (on), "
                     "or 0, false, no, off or empty (off)")


def debug() -> bool:
    """``GPUDENSE_DEBUG``: show tracebacks instead of one-line errors."""
    return flag(DEBUG)


def check_saved() -> bool:
    """``GPUDENSE_CHECK_SAVED``: check the arrays a forward pass saves (see :mod:`gpudense.saved`)."""
    return flag(CHECK_SAVED)


def backend() -> str:
    """``GPUDENSE_BACKEND`` as given (``""`` when unset); :func:`gpudense.get_backend` checks the name."""
    return text(BACKEND)


def mpi_cuda_aware() -> bool | None:
    """``GPUDENSE_MPI_CUDA_AWARE``: True or False when set, None (ask the MPI library) when unset or empty."""
    return flag(MPI_CUDA_AWARE) if text(MPI_CUDA_AWARE) else None


def cupy_tf32(value: str | None = None) -> bool:
    """Whether ``CUPY_TF32`` (or ``value``, a value it may take) turns CuPy's TF32 products on.

    Example:
        >>> cupy_tf32("1"), cupy_tf32("0"), cupy_tf32("")
        (True, False, False)
    """
    value = text(CUPY_TF32) if value is None else value.strip()
    return value not in ("", "0")


def cupy_tf32_value() -> str | None:
    """``CUPY_TF32`` as set (None when unset), to hand on to a child process."""
    return os.environ.get(CUPY_TF32)


def openblas_thread_timeout() -> str | None:
    """``OPENBLAS_THREAD_TIMEOUT`` as set, or None."""
    return os.environ.get(OPENBLAS_THREAD_TIMEOUT)


def launcher_sizes(environ: Any = None) -> list[str]:
    """The values of the launcher variables that are set (:data:`LAUNCHER_SIZE_VARS`), stripped."""
    return [value for name in LAUNCHER_SIZE_VARS if (value := text(name, environ))]


def values(names: Iterable[str]) -> dict[str, str | None]:
    """``{name: value or None}`` for a report of the settings in effect (e.g. ``gpudense bench``'s JSON)."""
    return {name: os.environ.get(name) for name in names}
