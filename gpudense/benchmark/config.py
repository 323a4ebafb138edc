"""What a benchmark run measures: the named shapes and dtypes, the modes, and :class:`BenchConfig`.

A :class:`BenchConfig` holds the choices of one run (``None`` where the mode's
default applies); :meth:`BenchConfig.with_defaults` fills the defaults in for
the backend that runs it. The configuration travels as JSON
(:meth:`BenchConfig.to_dict` / :meth:`BenchConfig.from_dict`), for instance to
the child process that runs the TF32 rows.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from gpudense._checks import check_bool, float_dtype, int_at_least
from gpudense._env import cupy_tf32

Dims = tuple[int, int, int]

#: Named shapes (batch, n_in, n_out). The CPU set is sized so that the default
#: run finishes in a few minutes on 2 cores.
SHAPES: dict[str, dict[str, Dims]] = {
    "gpu": {
        "small": (128, 64, 64),
        "tall-narrow": (1048576, 64, 64),
        "square": (4096, 4096, 4096),
        "transformer": (8192, 4096, 16384),
    },
    "cpu": {
        "small": (128, 64, 64),
        "tall-narrow": (1048576, 64, 64),
        "square": (2048, 2048, 2048),
        "transformer": (2048, 1024, 4096),
    },
    "cpu-quick": {
        "small": (128, 64, 64),
        "tall-narrow": (131072, 64, 64),
        "square": (512, 512, 512),
    },
    "smoke": {
        "tiny": (8, 4, 3),
        "tiny-tall": (256, 16, 8),
    },
}

#: dtype names: "tf32" is float32 storage with TF32 matrix products allowed
#: (``CUPY_TF32=1`` for CuPy, ``allow_tf32`` for torch); GPU only. bfloat16
#: needs ml_dtypes.
DTYPES = ("float32", "tf32", "float16", "bfloat16")
DEFAULT_DTYPES = {"gpu": ("float32", "tf32", "float16"), "cpu": ("float32",)}

#: The layer's own stages, then the comparisons.
STAGES = ("forward", "dx", "dw", "db", "step")
COMPARISONS = ("db.sum", "db.ones", "torch.step")
#: comparison -> the gpudense stage it is compared with (ratio = ours / theirs)
COMPARED_WITH = {"db.sum": "db", "db.ones": "db", "torch.step": "step"}

#: "full" is the default sweep, "quick" a smaller one, "smoke" tiny shapes that check the harness.
MODES = ("full", "quick", "smoke")
#: Repeats and warm-up calls per mode.
REPEATS = {"full": 20, "quick": 10, "smoke": 3}
WARMUP = {"full": 2, "quick": 1, "smoke": 1}
#: A GPU run takes at least this many repeats unless they are given (not in smoke mode).
GPU_MIN_REPEATS = 20

#: Ceiling problem sizes: copy bytes and square matrix-product side.
CEILING_SIZES = {
    "gpu": {"copy_bytes": 1 << 30, "matmul_n": 8192},
    "cpu": {"copy_bytes": 256 << 20, "matmul_n": 2048},
    "cpu-quick": {"copy_bytes": 64 << 20, "matmul_n": 1024},
    "smoke": {"copy_bytes": 1 << 20, "matmul_n": 64},
}


#: Timed samples of each ceiling, before the sweep and again after it, whatever ``repeats`` is:
#: a ceiling is the fastest sample, which a few show as well as many.
CEILING_REPEATS = 10


def parse_shapes(items: str | Sequence[str] | None, table: dict[str, Dims]) -> list[tuple[str, Dims]]:
    """Shapes by name from ``table`` or as ``BATCHxINxOUT`` triples, in the order given.

    Args:
        items: A comma-separated string or a sequence of names and triples;
            None or ``""`` means every shape of ``table``.
        table: name -> ``(batch, n_in, n_out)``.

    Returns:
        ``[(name or triple text, (batch, n_in, n_out)), ...]``.

    Raises:
        ValueError: an item is neither a name of ``table`` nor a triple of
            positive integers, or no item is given.

    Example:
        >>> parse_shapes("small,2x3x4", {"small": (128, 64, 64)})
        [('small', (128, 64, 64)), ('2x3x4', (2, 3, 4))]
    """
    if not items:
        return list(table.items())
    if isinstance(items, str):
        items = items.split(",")
    out: list[tuple[str, Dims]] = []
    for item in (str(t).strip() for t in items):
        if not item:
            continue
        if item in table:
            out.append((item, table[item]))
            continue
        try:
            dims = tuple(int(p) for p in item.lower().split("x"))
        except ValueError:
            dims = ()
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(
                f"shapes: expected a name ({', '.join(table)}) or BATCHxINxOUT with positive "
                f"integers; got {item!r}"
            )
        out.append((item, dims))  # type: ignore[arg-type]
    if not out:
        raise ValueError("shapes: no shape given")
    return out


def parse_dtypes(items: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """dtype names from :data:`DTYPES`, as a comma-separated string or a sequence; None means ``default``.

    Raises:
        ValueError: a name not in :data:`DTYPES`, or none at all.

    Example:
        >>> parse_dtypes("float16, TF32", ["float32"])
        ['float16', 'tf32']
    """
    if not items:
        return list(default)
    if isinstance(items, str):
        items = items.split(",")
    out = [str(t).strip().lower() for t in items if str(t).strip()]
    bad = [d for d in out if d not in DTYPES]
    if bad or not out:
        raise ValueError(f"dtypes: expected names from {DTYPES}; got {items!r}")
    return out


def storage_dtype(name: str) -> np.dtype:
    """The array dtype of a benchmark dtype name ("tf32" is stored as float32).

    Example:
        >>> storage_dtype("tf32")
        dtype('float32')
    """
    return np.dtype(np.float32) if name == "tf32" else float_dtype(name)


def tf32_plan(dtypes: Sequence[str], current: str | None) -> dict[str, list[str]]:
    """Split dtypes by the ``CUPY_TF32`` value each needs, for the CuPy backend.

    CuPy reads ``CUPY_TF32`` once per process, so "tf32" rows need a process
    with ``CUPY_TF32=1`` and "float32" rows one without it; float16 does not
    care. Returns ``{"here": [...], "1": [...], "0": [...]}``: the dtypes this
    process (whose variable is ``current``) can run, and those that need a
    child process with the variable set to "1" or "0".

    Example:
        >>> tf32_plan(["float32", "tf32", "float16"], None)
        {'here': ['float32', 'float16'], '1': ['tf32'], '0': []}
    """
    tf32_on = cupy_tf32(current or "")
    plan: dict[str, list[str]] = {"here": [], "1": [], "0": []}
    for d in dtypes:
        if d == "tf32" and not tf32_on:
            plan["1"].append(d)
        elif d == "float32" and tf32_on:
            plan["0"].append(d)
        else:
            plan["here"].append(d)
    return plan


def shape_table(on_gpu: bool, mode: str) -> dict[str, Dims]:
    """The named shapes a mode runs on a GPU or a CPU (``--quick`` on a GPU: its first three)."""
    if mode == "smoke":
        return SHAPES["smoke"]
    if on_gpu:
        return SHAPES["gpu"] if mode == "full" else {
            k: SHAPES["gpu"][k] for k in ("small", "tall-narrow", "square")}
    return SHAPES["cpu"] if mode == "full" else SHAPES["cpu-quick"]


def ceiling_sizes(on_gpu: bool, mode: str) -> dict[str, int]:
    """The copy size and matrix-product side of the ceilings for a mode on a GPU or a CPU."""
    if mode == "smoke":
        return CEILING_SIZES["smoke"]
    if on_gpu:
        return CEILING_SIZES["gpu"]
    return CEILING_SIZES["cpu"] if mode == "full" else CEILING_SIZES["cpu-quick"]


def default_threads() -> int:
    """The CPU threads a run uses by default: every core this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _items(name: str, value: Any) -> tuple[str, ...] | None:
    """A comma-separated string or a sequence of strings as a tuple of stripped items; None stays."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a comma-separated str or a sequence of str; got {value!r}")
    items = tuple(v.strip() for v in value if v.strip())
    if not items:
        raise ValueError(f"{name}: no {name[:-1]} given; got {value!r}")
    return items


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """The choices of one benchmark run; None means the mode's default for the backend.

    Args:
        backend: ``"auto"``, ``"numpy"`` or ``"cupy"``.
        mode: ``"full"``, ``"quick"`` (a smaller sweep) or ``"smoke"`` (tiny
            shapes, 3 repeats: checks that the harness runs).
        shapes: Names from the mode's table (:func:`shape_table`) or
            ``"BATCHxINxOUT"`` triples, as a sequence or a comma-separated
            string; None means the whole table.
        dtypes: Names from :data:`DTYPES`, as a sequence or a comma-separated
            string; None means :data:`DEFAULT_DTYPES` of the device.
        repeats: Timed calls per stage (>= 1); None: :data:`REPEATS` of the
            mode, at least 20 on a GPU outside smoke mode.
        warmup: Untimed calls per stage and round (>= 0); None: :data:`WARMUP`.
        threads: CPU threads the run is meant for (>= 1): the copy ceiling and
            torch use them, and the run records them; None: every usable core
            on a CPU, nothing on a GPU. Limiting the BLAS pools is the
            caller's part (``gpudense bench`` does it with threadpoolctl).
        torch: Time ``torch.nn.Linear`` too where torch imports.
        seed: Seed (>= 0) of the random inputs.

    Raises:
        ValueError: a value out of range, an unknown backend, mode or dtype.
        TypeError: a value of the wrong type.

    Example:
        >>> BenchConfig(mode="smoke", shapes="tiny,2x3x4").shapes
        ('tiny', '2x3x4')
    """

    backend: str = "auto"
    mode: str = "full"
    shapes: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] | None = None
    repeats: int | None = None
    warmup: int | None = None
    threads: int | None = None
    torch: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        from gpudense.backends import BACKEND_NAMES

        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}; got {self.backend!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")
        set_ = object.__setattr__  # the dataclass is frozen; these are normalisations
        set_(self, "shapes", _items("shapes", self.shapes))
        dtypes = _items("dtypes", self.dtypes)
        set_(self, "dtypes", None if dtypes is None else tuple(parse_dtypes(dtypes, ())))
        for name, low in (("repeats", 1), ("warmup", 0), ("threads", 1)):
            if getattr(self, name) is not None:
                set_(self, name, int_at_least(name, getattr(self, name), low))
        set_(self, "torch", check_bool("torch", self.torch))
        set_(self, "seed", int_at_least("seed", self.seed, 0))

    def with_defaults(self, backend: str) -> BenchConfig:
        """This configuration with every default filled in, for the backend ``"numpy"`` or ``"cupy"``.

        Shape names are checked against the mode's table here, so a bad name
        fails before anything is timed.

        Raises:
            ValueError: ``backend`` is not "numpy" or "cupy", or a shape is unknown.

        Example:
            >>> BenchConfig(mode="quick").with_defaults("cupy").repeats
            20
        """
        if backend not in ("numpy", "cupy"):
            raise ValueError(f"backend must be 'numpy' or 'cupy' (a resolved name); got {backend!r}")
        on_gpu = backend == "cupy"
        shapes = tuple(name for name, _ in parse_shapes(self.shapes, shape_table(on_gpu, self.mode)))
        dtypes = self.dtypes or DEFAULT_DTYPES["gpu" if on_gpu else "cpu"]
        repeats = self.repeats
        if repeats is None:
            repeats = REPEATS[self.mode]
            if on_gpu and self.mode != "smoke":
                repeats = max(repeats, GPU_MIN_REPEATS)
        warmup = WARMUP[self.mode] if self.warmup is None else self.warmup
        threads = self.threads
        if threads is None and not on_gpu:
            threads = default_threads()
        return dataclasses.replace(self, backend=backend, shapes=shapes, dtypes=tuple(dtypes),
                                   repeats=repeats, warmup=warmup, threads=threads)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchConfig:
        """The configuration :meth:`to_dict` wrote.

        Raises:
            ValueError: ``d`` is not a dict, or has keys that are not fields.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a benchmark configuration must be a dict; got {type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown benchmark configuration keys {unknown}; expected some of {sorted(fields)}")
        return cls(**d)
