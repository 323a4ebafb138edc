"""``gpudense bench``: time each stage of a dense layer against the hardware's ceilings.

For a sweep of layer shapes ``(batch, n_in, n_out)`` and dtypes, the forward
pass, ``dx``, ``dw``, ``db`` and the whole forward+backward step are timed one
by one, next to the comparisons a user would otherwise reach for:
``dy.sum(axis=0)`` and ``ones @ dy`` for ``db``, and ``torch.nn.Linear``
forward+backward through autograd (when torch imports) for the step.

Every row gives the median time and its spread over the repeats, the achieved
TFLOP/s and GB/s, and their fractions of two ceilings measured in the same
run: a large copy (bandwidth, bytes read plus bytes written; on a CPU split
over as many threads as the stages use) and a large square matrix product per
dtype (FLOP rate). A fraction above 1 is kept as measured and marked in the
table.

Timing: on a GPU with CUDA events around each call, on a CPU with
``time.perf_counter``. The repeats are split into a few rounds; each round
runs every stage as one block (warm-up, then timed calls), so all stages and
their comparisons see the same phases of a shared machine. Inputs are random normal numbers
(never zeros) in several rotating sets whose total size exceeds the last-level
cache, so repeats do not run from cache.

The statistics and the ceiling arithmetic are the pure functions
:func:`summarize`, :func:`stage_work`, :func:`rates`, :func:`copy_gbps`,
:func:`matmul_tflops`, :func:`n_rotating_sets`, :func:`tf32_plan`,
:func:`chunk_bounds` and :func:`format_percent`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np

#: Version of the JSON layout written by ``--json``.
SCHEMA = "gpudense-bench/1"

#: Named shapes (batch, n_in, n_out). The GPU set is the issue's; the CPU set is
#: sized so that the default run finishes in a few minutes on 2 cores.
SHAPES = {
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
#: (``CUPY_TF32=1`` for CuPy, ``allow_tf32`` for torch); GPU only.
DTYPES = ("float32", "tf32", "float16")
DEFAULT_DTYPES = {"gpu": ("float32", "tf32", "float16"), "cpu": ("float32",)}

#: The layer's own stages, then the comparisons.
STAGES = ("forward", "dx", "dw", "db", "step")
COMPARISONS = ("db.sum", "db.ones", "torch.step")
#: comparison -> the gpudense stage it is compared with (ratio = ours / theirs)
COMPARED_WITH = {"db.sum": "db", "db.ones": "db", "torch.step": "step"}

#: Repeats and warm-up calls per mode.
REPEATS = {"full": 20, "quick": 10, "smoke": 3}
WARMUP = {"full": 2, "quick": 1, "smoke": 1}

#: Ceiling problem sizes: copy bytes and square matrix-product side.
CEILING_SIZES = {
    "gpu": {"copy_bytes": 1 << 30, "matmul_n": 8192},
    "cpu": {"copy_bytes": 256 << 20, "matmul_n": 2048},
    "cpu-quick": {"copy_bytes": 64 << 20, "matmul_n": 1024},
    "smoke": {"copy_bytes": 1 << 20, "matmul_n": 64},
}

_ROW_KEYS = {
    "shape": str, "batch": int, "n_in": int, "n_out": int, "dtype": str, "stage": str,
    "impl": str, "samples_s": list, "stats": dict, "flops": int, "bytes": int,
    "tflops": float, "gbps": float, "frac_flops": float, "frac_bw": float,
    "fraction": float, "ratios": dict,
}


# ----------------------------------------------------------------------------
# Pure functions: statistics and ceiling arithmetic
# ----------------------------------------------------------------------------

def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median and spread of timing samples (seconds).

    Args:
        samples: One or more non-negative times.

    Returns:
        ``{"n", "median", "q1", "q3", "iqr", "min", "max", "mean"}``; the
        quartiles are NumPy's default (linear) percentiles.

    Raises:
        ValueError: no samples, or a negative or non-finite one.

    Example:
        >>> summarize([1.0, 2.0, 3.0, 4.0])["median"]
        2.5
    """
    a = np.asarray(samples, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"samples must be a non-empty 1-D sequence; got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"samples must be finite and >= 0; got {a.tolist()}")
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {
        "n": int(a.size), "median": float(med), "q1": float(q1), "q3": float(q3),
        "iqr": float(q3 - q1), "min": float(a.min()), "max": float(a.max()),
        "mean": float(a.mean()),
    }


def paired_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """Median over repeats of ``ours[i] / theirs[i]`` (times taken in the same repeat).

    Pairing cancels slow drifts of a shared machine that a ratio of two
    medians would keep. A value below 1 means ours is faster.

    Example:
        >>> paired_ratio([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
        1.0
    """
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal-length non-empty sample lists; got {a.shape} and {b.shape}")
    if np.any(b <= 0):
        raise ValueError("the reference samples must be > 0")
    return float(np.median(a / b))


def stage_work(stage: str, batch: int, n_in: int, n_out: int, itemsize: int) -> tuple[int, int]:
    """Floating-point operations and the fewest bytes a stage must move.

    Matrix products count ``2 * batch * n_in * n_out`` operations; the bias
    gradient counts one add per element of ``dy``. Bytes are each input read
    once and each output written once, at ``itemsize`` bytes per element.

    Args:
        stage: one of :data:`STAGES` or :data:`COMPARISONS`.
        batch, n_in, n_out: the layer shape.
        itemsize: bytes per element (4 for float32 and tf32, 2 for float16).

    Returns:
        ``(flops, bytes)`` as ints.

    Example:
        >>> stage_work("dw", 4, 3, 2, 4)
        (48, 104)
    """
    b, i, o, s = int(batch), int(n_in), int(n_out), int(itemsize)
    mm = 2 * b * i * o
    fwd = (mm, (b * i + i * o + o + b * o) * s)
    dx = (mm, (b * o + i * o + b * i) * s)
    dw = (mm, (b * i + b * o + i * o) * s)
    db = (b * o, (b * o + o) * s)
    table = {
        "forward": fwd, "dx": dx, "dw": dw, "db": db, "db.sum": db, "db.ones": db,
    }
    if stage in table:
        return table[stage]
    if stage in ("step", "torch.step"):
        return (fwd[0] + dx[0] + dw[0] + db[0], fwd[1] + dx[1] + dw[1] + db[1])
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES + COMPARISONS}")


def copy_gbps(nbytes: int, seconds: float) -> float:
    """Bandwidth of a copy of ``nbytes``: bytes read plus bytes written, in GB/s (1e9).

    Example:
        >>> copy_gbps(1_000_000_000, 1.0)
        2.0
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0; got {seconds}")
    return 2.0 * nbytes / seconds / 1e9


def matmul_tflops(n: int, seconds: float) -> float:
    """Rate of an ``n x n`` by ``n x n`` matrix product (``2 n^3`` operations), in TFLOP/s.

    Example:
        >>> matmul_tflops(1000, 2e-3)
        1.0
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0; got {seconds}")
    return 2.0 * n ** 3 / seconds / 1e12


def rates(flops: int, nbytes: int, seconds: float, *, peak_tflops: float | None,
          peak_gbps: float | None) -> dict[str, float]:
    """Achieved rates and their fractions of the ceilings.

    Args:
        flops, nbytes: the work of one call (see :func:`stage_work`).
        seconds: the time of one call (the median).
        peak_tflops: the measured matrix-product ceiling for this dtype, or None.
        peak_gbps: the measured copy bandwidth, or None.

    Returns:
        ``{"tflops", "gbps", "frac_flops", "frac_bw", "fraction"}``, where
        ``fraction`` is the larger of the two fractions (how close the call is
        to the roofline's bound); a fraction whose ceiling is unknown is NaN.

    Example:
        >>> rates(2e12, 1e9, 1.0, peak_tflops=4.0, peak_gbps=2.0)["fraction"]
        0.5
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0; got {seconds}")
    tflops = flops / seconds / 1e12
    gbps = nbytes / seconds / 1e9
    frac_flops = tflops / peak_tflops if peak_tflops else math.nan
    frac_bw = gbps / peak_gbps if peak_gbps else math.nan
    known = [f for f in (frac_flops, frac_bw) if not math.isnan(f)]
    return {
        "tflops": tflops, "gbps": gbps, "frac_flops": frac_flops, "frac_bw": frac_bw,
        "fraction": max(known) if known else math.nan,
    }


def n_rotating_sets(bytes_per_set: int, cache_bytes: int, *, budget_bytes: int,
                    max_sets: int = 512, factor: int = 2) -> int:
    """How many input sets to rotate through so their total exceeds the cache.

    Returns the smallest count whose total is at least ``factor * cache_bytes``,
    at least 1, and at most what ``budget_bytes`` and ``max_sets`` allow (but
    never 0). ``max_sets`` bounds the set-up time for tiny shapes, whose
    inputs then may stay partly in cache; the count used is in every row.

    Example:
        >>> n_rotating_sets(10, 100, budget_bytes=10_000)
        20
    """
    if bytes_per_set <= 0:
        raise ValueError(f"bytes_per_set must be > 0; got {bytes_per_set}")
    want = max(1, math.ceil(factor * cache_bytes / bytes_per_set))
    cap = max(1, min(max_sets, budget_bytes // bytes_per_set))
    return int(min(want, cap))


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
    tf32_on = (current or "0").strip() not in ("", "0")
    plan: dict[str, list[str]] = {"here": [], "1": [], "0": []}
    for d in dtypes:
        if d == "tf32" and not tf32_on:
            plan["1"].append(d)
        elif d == "float32" and tf32_on:
            plan["0"].append(d)
        else:
            plan["here"].append(d)
    return plan


def parse_shapes(text: str | None, table: dict[str, tuple[int, int, int]]) -> list[tuple[str, tuple[int, int, int]]]:
    """``--shapes``: comma-separated names from ``table`` or ``BATCHxINxOUT`` triples.

    Example:
        >>> parse_shapes("small,2x3x4", {"small": (128, 64, 64)})
        [('small', (128, 64, 64)), ('2x3x4', (2, 3, 4))]
    """
    if not text:
        return list(table.items())
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item in table:
            out.append((item, table[item]))
            continue
        parts = item.lower().split("x")
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            dims = ()
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(
                f"--shapes: expected a name ({', '.join(table)}) or BATCHxINxOUT with positive "
                f"integers; got {item!r}"
            )
        out.append((item, dims))  # type: ignore[arg-type]
    if not out:
        raise ValueError("--shapes: no shape given")
    return out


def parse_dtypes(text: str | None, default: Sequence[str]) -> list[str]:
    """``--dtypes``: comma-separated names from :data:`DTYPES`."""
    if not text:
        return list(default)
    out = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [d for d in out if d not in DTYPES]
    if bad or not out:
        raise ValueError(f"--dtypes: expected names from {DTYPES}; got {text!r}")
    return out


def storage_dtype(name: str) -> np.dtype:
    """The array dtype of a benchmark dtype name ("tf32" is stored as float32)."""
    return np.dtype(np.float32 if name == "tf32" else name)


# ----------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------

def cache_bytes_cpu() -> int:
    """The largest CPU cache (usually L3) in bytes, from sysfs; 32 MiB if unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            try:
                with open(os.path.join(base, entry, "size"), encoding="ascii") as f:
                    text = f.read().strip().upper()
            except OSError:
                continue
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            digits = text.rstrip("KMG")
            if digits.isdigit():
                best = max(best, int(digits) * mult)
    except OSError:
        pass
    return best or (32 << 20)


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of the loaded BLAS/OpenMP pools (kernel, threads), or []."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [dict(d) for d in threadpool_info()]


def environment(backend_name: str, threads: int | None) -> dict[str, Any]:
    """Facts recorded with every run: gpudense info, versions, CPU, threads, BLAS."""
    from gpudense.info import collect

    env: dict[str, Any] = dict(collect())
    from gpudense.backends.numpy_backend import cpu_model

    env["cpu_model"] = cpu_model()
    env["cpu_count"] = os.cpu_count()
    env["bench_backend"] = backend_name
    env["threads"] = threads
    env["hostname"] = platform.node()
    env["blas"] = blas_info()
    env["env_vars"] = {
        k: os.environ.get(k)
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                  "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUPY_TF32", "GPUDENSE_BACKEND")
    }
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        env["torch"] = f"not importable ({type(exc).__name__})"
    else:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    return env


# ----------------------------------------------------------------------------
# Timers
# ----------------------------------------------------------------------------

class CpuTimer:
    """Times a call with ``time.perf_counter``."""

    kind = "perf_counter"

    def time(self, fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


class CudaTimer:
    """Times a call with two CUDA events on the current stream."""

    kind = "cuda-events"

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        self.start = cp.cuda.Event()
        self.end = cp.cuda.Event()

    def time(self, fn: Callable[[], Any]) -> float:
        cp = self.cp
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return cp.cuda.get_elapsed_time(self.start, self.end) / 1e3


def split_repeats(repeats: int, rounds: int) -> list[int]:
    """Spread ``repeats`` timed calls over ``rounds`` rounds as evenly as possible.

    Example:
        >>> split_repeats(10, 4)
        [3, 3, 2, 2]
    """
    if repeats < 1 or rounds < 1:
        raise ValueError(f"repeats and rounds must be >= 1; got {repeats} and {rounds}")
    rounds = min(rounds, repeats)
    base, extra = divmod(repeats, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def run_rounds(fns: dict[str, Callable[[int], Any]], *, n_sets: int, repeats: int, warmup: int,
               timer: Any, nvtx: Callable[[str], Any], rounds: int = 4) -> dict[str, list[float]]:
    """Time every ``fns[name](set_index)``; return its samples in seconds, per name.

    The repeats are split into ``rounds``; in each round every stage runs in
    turn as one block: ``warmup`` untimed calls, then its share of timed
    calls. Blocks keep one library's idle worker threads (OpenBLAS, OpenMP
    spin a while after a call) from running into the next stage's timed
    call, and rounds spread every stage over the whole run, so a slow phase
    of a shared machine hits all of them alike. Timed call ``i`` uses input
    set ``i % n_sets``; sample ``i`` of two stages comes from the same round.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    done = 0
    for share in split_repeats(repeats, rounds):
        for name, fn in fns.items():
            for w in range(warmup):
                fn((done + w) % n_sets)
            with nvtx(f"bench.{name}"):
                for i in range(done, done + share):
                    k = i % n_sets
                    samples[name].append(timer.time(lambda: fn(k)))
        done += share
    return samples


# ----------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------

class _Torch:
    """``torch.nn.Linear`` forward+backward on the benchmark's own data."""

    def __init__(self, device: str, dtype_name: str, threads: int | None) -> None:
        import torch

        self.torch = torch
        self.device = device
        if device == "cpu" and threads:
            torch.set_num_threads(threads)
        if device == "cuda":
            tf32 = dtype_name == "tf32"
            matmul = torch.backends.cuda.matmul
            if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; allow_tf32 is deprecated there
                matmul.fp32_precision = "tf32" if tf32 else "ieee"
            else:
                matmul.allow_tf32 = tf32

    def tensor(self, a: Any) -> Any:
        torch = self.torch
        if self.device == "cpu":
            return torch.from_numpy(np.ascontiguousarray(a))
        return torch.as_tensor(a, device="cuda")  # __cuda_array_interface__, no copy

    def make(self, x: Any, w: Any, b: Any, dy: Any) -> Callable[[], Any]:
        torch = self.torch
        n_in, n_out = w.shape
        lin = torch.nn.Linear(n_in, n_out, device=self.device, dtype=self.tensor(w).dtype)
        with torch.no_grad():
            lin.weight.copy_(self.tensor(w).T)  # torch keeps (n_out, n_in)
            lin.bias.copy_(self.tensor(b))
        tx = self.tensor(x).requires_grad_(True)
        tdy = self.tensor(dy)

        def step() -> None:
            lin.weight.grad = None
            lin.bias.grad = None
            tx.grad = None
            lin(tx).backward(tdy)

        return step


def _random(xp: Any, gen: Any, shape: tuple[int, ...], dtype: np.dtype, scale: float) -> Any:
    # Normal numbers in float32, then the target dtype: never zeros, never inf.
    a = gen.standard_normal(shape, dtype=np.float32)
    if scale != 1.0:
        a *= np.float32(scale)
    return a.astype(dtype, copy=False)


def bench_shape(be: Any, *, shape_name: str, dims: tuple[int, int, int], dtype_name: str,
                repeats: int, warmup: int, cache_bytes: int, budget_bytes: int, torch_ok: bool,
                threads: int | None, seed: int, max_sets: int = 512) -> list[dict[str, Any]]:
    """Time all stages and comparisons for one shape and dtype; return raw rows (no rates)."""
    from gpudense.functional import dense_backward, dense_forward

    xp = be.xp
    on_gpu = be.name == "cupy"
    batch, n_in, n_out = dims
    dt = storage_dtype(dtype_name)
    s = dt.itemsize
    # The stage that reads least (db reads only dy) must still miss the cache.
    per_set = min(batch * n_in + n_in * n_out, batch * n_out) * s
    n_sets = n_rotating_sets(per_set, cache_bytes, budget_bytes=budget_bytes, max_sets=max_sets)
    gen = xp.random.default_rng(seed)
    sets = []
    for _ in range(n_sets):
        x = _random(xp, gen, (batch, n_in), dt, 1.0)
        w = _random(xp, gen, (n_in, n_out), dt, 1.0 / math.sqrt(n_in))
        b = _random(xp, gen, (n_out,), dt, 1.0)
        dy = _random(xp, gen, (batch, n_out), dt, 1.0)
        sets.append((x, w, b, dy))
    ones = xp.ones(batch, dtype=dt)

    fns: dict[str, Callable[[int], Any]] = {
        "forward": lambda k: dense_forward(sets[k][0], sets[k][1], sets[k][2]),
        "dx": lambda k: xp.matmul(sets[k][3], sets[k][1].T),
        "dw": lambda k: xp.matmul(sets[k][0].T, sets[k][3]),
        "db": lambda k: be.bias_grad(sets[k][3]),
        "step": lambda k: (dense_forward(sets[k][0], sets[k][1], sets[k][2]),
                           dense_backward(sets[k][3], sets[k][0], sets[k][1])),
        "db.sum": lambda k: sets[k][3].sum(axis=0),
        "db.ones": lambda k: ones @ sets[k][3],
    }
    if torch_ok:
        tb = _Torch("cuda" if on_gpu else "cpu", dtype_name, threads)
        steps = [tb.make(*st) for st in sets]
        fns["torch.step"] = lambda k: steps[k]()

    timer = CudaTimer(xp) if on_gpu else CpuTimer()
    samples = run_rounds(fns, n_sets=n_sets, repeats=repeats, warmup=warmup, timer=timer,
                         nvtx=be.nvtx_range)
    rows = []
    for stage, ss in samples.items():
        flops, nbytes = stage_work(stage, batch, n_in, n_out, s)
        ratios = {}
        if stage == "step" and "torch.step" in samples:
            ratios["torch.step"] = paired_ratio(ss, samples["torch.step"])
        if stage == "db":
            ratios["db.sum"] = paired_ratio(ss, samples["db.sum"])
            ratios["db.ones"] = paired_ratio(ss, samples["db.ones"])
        rows.append({
            "shape": shape_name, "batch": batch, "n_in": n_in, "n_out": n_out,
            "dtype": dtype_name, "stage": stage,
            "impl": "torch" if stage.startswith("torch") else
                    ("gpudense" if stage in STAGES else "array-module"),
            "samples_s": [float(v) for v in ss], "stats": summarize(ss),
            "flops": int(flops), "bytes": int(nbytes), "ratios": ratios,
            "n_sets": n_sets, "timer": timer.kind,
        })
    del sets, fns
    return rows


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``parts`` contiguous, nearly equal ``(start, stop)`` pieces.

    The first ``n % parts`` pieces are one element longer; no piece is empty.

    Example:
        >>> chunk_bounds(10, 3)
        [(0, 4), (4, 7), (7, 10)]
    """
    if n < 1 or parts < 1:
        raise ValueError(f"n and parts must be >= 1; got {n} and {parts}")
    parts = min(parts, n)
    base, extra = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        stop = start + base + (1 if p < extra else 0)
        out.append((start, stop))
        start = stop
    return out


class ParallelCopy:
    """``dst[...] = src`` for 1-D NumPy arrays, by ``threads`` threads at once.

    Each thread copies one contiguous chunk (:func:`chunk_bounds`) with
    ``np.copyto``, which releases the GIL, so the copy runs on as many cores
    as the benchmark's other stages; a call returns when every chunk is done.
    With one thread it is a plain ``np.copyto``. Use as a context manager
    (the worker threads end on exit).

    Example:
        >>> src = np.arange(10, dtype=np.float32); dst = np.empty_like(src)
        >>> with ParallelCopy(dst, src, threads=3) as copy:
        ...     copy()
        >>> bool((dst == src).all())
        True
    """

    def __init__(self, dst: np.ndarray, src: np.ndarray, *, threads: int) -> None:
        if dst.shape != src.shape or dst.ndim != 1:
            raise ValueError(f"need two 1-D arrays of one shape; got {dst.shape} and {src.shape}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        self.pieces = [(dst[a:b], src[a:b]) for a, b in chunk_bounds(src.size, threads)]
        self.pool = ThreadPoolExecutor(max_workers=len(self.pieces)) if len(self.pieces) > 1 else None

    def __call__(self) -> None:
        if self.pool is None:
            np.copyto(*self.pieces[0])
            return
        for f in [self.pool.submit(np.copyto, d, s) for d, s in self.pieces]:
            f.result()

    def __enter__(self) -> "ParallelCopy":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def measure_ceilings(be: Any, dtypes: Sequence[str], *, sizes: dict[str, int], repeats: int,
                     warmup: int, copy: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Measure the copy bandwidth and a square matrix product's rate per dtype.

    On a GPU the copy is one ``cupy.copyto``. On a CPU it is split into
    ``threads`` contiguous chunks copied at once by ``threads`` threads
    (:class:`ParallelCopy`; None means 1), so that the bandwidth ceiling is
    measured at the thread count the stages run with; the whole copy is timed.
    """
    xp = be.xp
    on_gpu = be.name == "cupy"
    timer = CudaTimer(xp) if on_gpu else CpuTimer()
    nvtx = be.nvtx_range
    out: dict[str, Any] = {"copy": None, "matmul": {}}
    gen = xp.random.default_rng(12345)
    if copy:
        nbytes = int(sizes["copy_bytes"])
        src = _random(xp, gen, (nbytes // 4,), np.dtype(np.float32), 1.0)
        dst = xp.empty_like(src)
        if on_gpu:
            ss = run_rounds({"copy": lambda k: xp.copyto(dst, src)}, n_sets=1, repeats=repeats,
                             warmup=warmup, timer=timer, nvtx=nvtx)["copy"]
            out["copy"] = {"bytes": nbytes, "samples_s": ss,
                           "how": "copyto of a float32 array; bytes read + written"}
        else:
            n_threads = threads or 1
            with ParallelCopy(dst, src, threads=n_threads) as pcopy:
                ss = run_rounds({"copy": lambda k: pcopy()}, n_sets=1, repeats=repeats,
                                 warmup=warmup, timer=timer, nvtx=nvtx)["copy"]
            out["copy"] = {"bytes": nbytes, "samples_s": ss, "threads": n_threads,
                           "how": f"copyto of a float32 array in {n_threads} contiguous chunks "
                                  f"by {n_threads} threads at once; bytes read + written"}
        del src, dst
    n = int(sizes["matmul_n"])
    for d in dtypes:
        dt = storage_dtype(d)
        a = _random(xp, gen, (n, n), dt, 1.0)
        bm = _random(xp, gen, (n, n), dt, 1.0 / math.sqrt(n))
        c = xp.empty((n, n), dtype=dt)
        ss = run_rounds({"mm": lambda k: xp.matmul(a, bm, out=c)}, n_sets=1, repeats=repeats,
                         warmup=warmup, timer=timer, nvtx=nvtx)["mm"]
        out["matmul"][d] = {"n": n, "samples_s": ss}
        del a, bm, c
    return out


def finish_ceilings(first: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    """Pool the samples of ceiling measurements (taken before and after the sweep).

    A ceiling is what the machine can do, so its rate comes from the fastest
    sample (``gbps``, ``tflops``); the median's rate is kept beside it
    (``gbps_median``, ``tflops_median``). Rows compare their median with the
    fastest ceiling sample, so a busy phase of a shared machine during one of
    the two measurements does not inflate the fractions.
    """
    out: dict[str, Any] = {"copy": None, "matmul": {}}
    parts = (first,) + more
    copies = [p["copy"] for p in parts if p.get("copy") and "samples_s" in p["copy"]]
    if copies:
        ss = [v for c in copies for v in c["samples_s"]]
        st = summarize(ss)
        nbytes = copies[0]["bytes"]
        out["copy"] = dict(copies[0], samples_s=ss, stats=st, gbps=copy_gbps(nbytes, st["min"]),
                           gbps_median=copy_gbps(nbytes, st["median"]))
    elif first.get("copy"):
        out["copy"] = first["copy"]  # given by the parent process
    for d in first["matmul"]:
        ms = [p["matmul"][d] for p in parts if d in p.get("matmul", {})]
        ss = [v for m in ms for v in m["samples_s"]]
        st = summarize(ss)
        n = ms[0]["n"]
        out["matmul"][d] = {"n": n, "samples_s": ss, "stats": st,
                            "tflops": matmul_tflops(n, st["min"]),
                            "tflops_median": matmul_tflops(n, st["median"])}
    return out


def add_rates(rows: list[dict[str, Any]], ceilings: dict[str, Any]) -> None:
    """Fill each row's rates and fractions from its median and the ceilings."""
    peak_gbps = ceilings["copy"]["gbps"] if ceilings.get("copy") else None
    for row in rows:
        mm = ceilings["matmul"].get(row["dtype"])
        row.update(rates(row["flops"], row["bytes"], row["stats"]["median"],
                         peak_tflops=mm["tflops"] if mm else None, peak_gbps=peak_gbps))


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """Limit BLAS/OpenMP threads with threadpoolctl for the block (no-op for None)."""
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise RuntimeError(
            "--threads needs threadpoolctl; install gpudense[bench]"
        ) from exc
    with threadpool_limits(limits=threads):
        yield


def _mode(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else ("quick" if args.quick else "full")


def _shape_table(on_gpu: bool, mode: str) -> dict[str, tuple[int, int, int]]:
    if mode == "smoke":
        return SHAPES["smoke"]
    if on_gpu:
        return SHAPES["gpu"] if mode == "full" else {
            k: SHAPES["gpu"][k] for k in ("small", "tall-narrow", "square")}
    return SHAPES["cpu"] if mode == "full" else SHAPES["cpu-quick"]


def _ceiling_sizes(on_gpu: bool, mode: str) -> dict[str, int]:
    if mode == "smoke":
        return CEILING_SIZES["smoke"]
    if on_gpu:
        return CEILING_SIZES["gpu"]
    return CEILING_SIZES["cpu"] if mode == "full" else CEILING_SIZES["cpu-quick"]


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def sweep(args: argparse.Namespace, *, copy_gbps_given: float | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run the benchmark this process can run; return the result document."""
    from gpudense.backends import get_backend

    be = get_backend(args.backend)
    on_gpu = be.name == "cupy"
    mode = _mode(args)
    shapes = parse_shapes(args.shapes, _shape_table(on_gpu, mode))
    dtypes = parse_dtypes(args.dtypes, DEFAULT_DTYPES["gpu" if on_gpu else "cpu"])
    repeats = REPEATS[mode] if args.repeats is None else args.repeats
    if on_gpu and mode != "smoke" and args.repeats is None:
        repeats = max(repeats, 20)  # GPU statistics: at least 20 repeats unless asked otherwise
    warmup = WARMUP[mode] if args.warmup is None else args.warmup
    if repeats < 1 or warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0; got {repeats} and {warmup}")
    threads = args.threads
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    if threads is None and not on_gpu:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    notes: list[str] = []
    if not on_gpu and "tf32" in dtypes:
        dtypes = [d for d in dtypes if d != "tf32"]
        notes.append("tf32 rows skipped: TF32 is a GPU matrix-unit mode (backend is numpy)")
        if not dtypes:
            raise ValueError("--dtypes tf32 needs the cupy backend (TF32 is a GPU mode); "
                             "on a CPU use float32 or float16")
    if not on_gpu and "float16" in dtypes:
        notes.append("float16 on NumPy has no BLAS path: its matrix products are slow loops")
    torch_ok = (not args.no_torch) and _torch_importable()
    if not torch_ok:
        notes.append("torch.step not measured: " + ("--no-torch given" if args.no_torch
                                                    else "torch is not importable"))

    plan = tf32_plan(dtypes, os.environ.get("CUPY_TF32")) if on_gpu else {
        "here": dtypes, "1": [], "0": []}
    if on_gpu:
        import cupy

        cache = int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["l2CacheSize"])
        free, _total = cupy.cuda.runtime.memGetInfo()
        budget = int(min(2 << 30, free // 8))
    else:
        cache = cache_bytes_cpu()
        budget = 512 << 20

    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": ["gpudense", "bench"] + argv_of(args),
        "settings": {
            "backend": be.name, "mode": mode, "repeats": repeats, "warmup": warmup,
            "threads": threads, "shapes": {n: list(d) for n, d in shapes},
            "dtypes": dtypes, "cache_bytes": cache, "rotation_budget_bytes": budget,
            "seed": args.seed,
        },
        "notes": notes,
    }
    with thread_limit(threads):
        doc["environment"] = environment(be.name, threads)
        tasks = [(n, d, dt) for dt in plan["here"] for n, d in shapes]
        bar = _progress(total=len(tasks) + 2, enabled=progress and not args.no_progress)
        bar.set_description("ceilings")
        sizes = _ceiling_sizes(on_gpu, mode)
        before = measure_ceilings(be, plan["here"], sizes=sizes, repeats=repeats, warmup=warmup,
                                  copy=copy_gbps_given is None, threads=threads)
        if copy_gbps_given is not None:
            before["copy"] = {"gbps": copy_gbps_given, "how": "measured by the parent process"}
        bar.update(1)
        rows: list[dict[str, Any]] = []
        for i, (name, dims, dt) in enumerate(tasks):
            bar.set_description(f"{name} {dt}")
            rows += bench_shape(be, shape_name=name, dims=dims, dtype_name=dt, repeats=repeats,
                                warmup=warmup, cache_bytes=cache, budget_bytes=budget,
                                torch_ok=torch_ok, threads=threads, seed=args.seed + i,
                                max_sets=2 if mode == "smoke" else 512)
            bar.update(1)
        bar.set_description("ceilings again")
        after = measure_ceilings(be, plan["here"], sizes=sizes, repeats=repeats, warmup=warmup,
                                 copy=copy_gbps_given is None, threads=threads)
        bar.update(1)
        bar.close()
    ceilings = finish_ceilings(before, after)
    for value, group in (("1", plan["1"]), ("0", plan["0"])):
        if group:
            child = _run_child(args, group, value, ceilings["copy"]["gbps"])
            ceilings["matmul"].update(child["ceilings"]["matmul"])
            rows += child["rows"]
            notes += [f"[CUPY_TF32={value} child] {n}" for n in child["notes"]]
    add_rates(rows, ceilings)
    doc["ceilings"] = ceilings
    doc["rows"] = rows
    return doc


def _run_child(args: argparse.Namespace, dtypes: list[str], tf32: str, gbps: float) -> dict[str, Any]:
    """Run ``dtypes`` in a child process with ``CUPY_TF32=tf32`` (CuPy reads it once)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "child.json")
        argv = ([sys.executable, "-m", "gpudense", "bench"]
                + argv_of(args, drop=("backend", "dtypes", "json", "table", "plot", "no_progress",
                                      "nsys"))
                + ["--backend", "cupy", "--dtypes", ",".join(dtypes), "--_child-json", path,
                   "--_child-copy-gbps", repr(gbps), "--no-progress"])
        env = dict(os.environ, CUPY_TF32=tf32)
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"the CUPY_TF32={tf32} child run for {dtypes} failed "
                               f"(exit {proc.returncode})")
        with open(path, encoding="utf-8") as f:
            return json.load(f)


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_description(self, s: str) -> None: ...
    def close(self) -> None: ...


def _progress(*, total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, file=sys.stderr, unit="case", leave=False)


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------

def _fmt(v: float, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


#: Marks a fraction of a ceiling above 1 in the table (see :func:`format_percent`).
ABOVE_CEILING = "!"


def format_percent(frac: float | None) -> str:
    """A fraction of a ceiling as a whole percentage; above 100% marked with :data:`ABOVE_CEILING`.

    A stage that beats the measured ceiling means the ceiling under-estimates
    the hardware for that access pattern (for instance a small ``dy`` that
    stays in cache); the value is shown as measured, never capped.

    Example:
        >>> format_percent(0.5), format_percent(1.02), format_percent(None)
        ('50', '102!', '-')
    """
    if frac is None or math.isnan(frac):
        return "-"
    text = f"{100 * frac:.0f}"
    return text + ABOVE_CEILING if frac > 1.0 else text


def format_table(doc: dict[str, Any]) -> str:
    """The result document as a fixed-width text table (also valid Markdown)."""
    env = doc["environment"]
    c = doc["ceilings"]
    lines = [
        f"gpudense bench ({doc['settings']['mode']}) {doc['created_utc']}",
        f"backend {doc['settings']['backend']}; device: {env.get('device', env.get('cpu_model'))}; "
        f"threads {doc['settings']['threads']}; numpy {env.get('numpy')}; torch {env.get('torch')}",
        "thread pools: " + ("; ".join(
            f"{b.get('internal_api')} {b.get('prefix')} {b.get('version') or ''}"
            + (f" kernel {b['architecture']}" if b.get("architecture") else "")
            + f", {b.get('num_threads')} threads" for b in env.get("blas") or [])
            or "threadpoolctl not installed"),
        "OPENBLAS_CORETYPE=" + str((env.get("env_vars") or {}).get("OPENBLAS_CORETYPE"))
        + " OPENBLAS_L2_SIZE=" + str((env.get("env_vars") or {}).get("OPENBLAS_L2_SIZE")),
        "ceilings (fastest of the samples before and after the sweep): copy "
        + (f"{c['copy']['gbps']:.1f} GB/s" if c.get("copy") else "-")
        + (f" ({c['copy']['threads']} threads)" if (c.get("copy") or {}).get("threads") else "")
        + "; "
        + "; ".join(f"matmul {d} {m['tflops']:.3f} TFLOP/s (n={m.get('n')})"
                    for d, m in c["matmul"].items()),
        "",
        "| shape | batch x in x out | dtype | stage | median ms | IQR ms | min ms | TFLOP/s | GB/s "
        "| %FLOP | %BW | time ours/ref |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["rows"]:
        st = r["stats"]
        ratios = ", ".join(f"{v:.2f}x {k}" for k, v in r["ratios"].items())
        lines.append(
            f"| {r['shape']} | {r['batch']}x{r['n_in']}x{r['n_out']} | {r['dtype']} | {r['stage']} "
            f"| {st['median'] * 1e3:.3f} | {st['iqr'] * 1e3:.3f} | {st['min'] * 1e3:.3f} "
            f"| {_fmt(r['tflops'], '.3f')} | {_fmt(r['gbps'], '.1f')} "
            f"| {format_percent(r['frac_flops'])} | {format_percent(r['frac_bw'])} "
            f"| {ratios} |"
        )
    if any((r[k] or 0) > 1.0 for r in doc["rows"] for k in ("frac_flops", "frac_bw")):
        lines.append(
            f"\n{ABOVE_CEILING} above 100%: the stage moved bytes (or FLOPs) faster than the "
            "measured ceiling, which then under-estimates the hardware for that access pattern "
            "(e.g. inputs served from cache); the value is not capped.")
    for n in doc["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def write_plot(doc: dict[str, Any], path: str) -> None:
    """PNG of each stage's fraction of its roofline ceiling, per shape, one panel per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(r["dtype"] for r in doc["rows"]))
    stages = [s for s in STAGES + COMPARISONS if any(r["stage"] == s for r in doc["rows"])]
    fig, axes = plt.subplots(len(dtypes), 1, figsize=(10, 3.6 * max(1, len(dtypes))),
                             squeeze=False)
    for ax, dt in zip(axes[:, 0], dtypes):
        rows = [r for r in doc["rows"] if r["dtype"] == dt]
        shapes = list(dict.fromkeys(r["shape"] for r in rows))
        width = 0.8 / max(1, len(stages))
        for j, stage in enumerate(stages):
            vals = []
            for sh in shapes:
                m = [r["fraction"] for r in rows if r["shape"] == sh and r["stage"] == stage]
                vals.append(m[0] if m and not math.isnan(m[0]) else 0.0)
            ax.bar(np.arange(len(shapes)) + (j - (len(stages) - 1) / 2) * width, vals, width,
                   label=stage)
        dims = {r["shape"]: f"{r['batch']}x{r['n_in']}x{r['n_out']}" for r in rows}
        ax.set_xticks(np.arange(len(shapes)))
        ax.set_xticklabels([f"{sh}\n{dims[sh]}" for sh in shapes])
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_ylabel("fraction of ceiling")
        ax.set_title(f"{doc['settings']['backend']} {dt}: max(FLOP rate / matmul ceiling, "
                     f"bytes / copy bandwidth), median of the repeats", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=len(stages), fontsize=8, loc="upper center",
               bbox_to_anchor=(0.5, 0.955))
    env = doc["environment"]
    fig.suptitle(f"gpudense bench - {env.get('device', env.get('cpu_model'))}, "
                 f"threads {doc['settings']['threads']}, {doc['created_utc']}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.90))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_document(doc: dict[str, Any]) -> None:
    """Raise ValueError where ``doc`` does not have the ``--json`` layout (keys and types)."""
    def need(obj: dict[str, Any], key: str, typ: Any, where: str) -> Any:
        if key not in obj:
            raise ValueError(f"{where}: missing key {key!r}")
        if not isinstance(obj[key], typ):
            raise ValueError(f"{where}.{key}: expected {typ}, got {type(obj[key]).__name__}")
        return obj[key]

    if need(doc, "schema", str, "doc") != SCHEMA:
        raise ValueError(f"doc.schema: expected {SCHEMA!r}, got {doc['schema']!r}")
    for key, typ in (("created_utc", str), ("command", list), ("settings", dict),
                     ("environment", dict), ("ceilings", dict), ("rows", list), ("notes", list)):
        need(doc, key, typ, "doc")
    for key in ("numpy", "cpu_model", "threads", "torch", "blas", "env_vars", "python"):
        if key not in doc["environment"]:
            raise ValueError(f"doc.environment: missing key {key!r}")
    matmul = need(doc["ceilings"], "matmul", dict, "ceilings")
    copy = need(doc["ceilings"], "copy", dict, "ceilings")
    need(copy, "gbps", (int, float), "ceilings.copy")
    for d, m in matmul.items():
        need(m, "tflops", (int, float), f"ceilings.matmul.{d}")
    for i, row in enumerate(doc["rows"]):
        for key, typ in _ROW_KEYS.items():
            # rates are null where a ceiling is unknown (NaN is not JSON)
            need(row, key, (int, float, type(None)) if typ is float else typ, f"rows[{i}]")
        for key in ("n", "median", "q1", "q3", "iqr", "min", "max"):
            need(row["stats"], key, (int, float), f"rows[{i}].stats")
        if len(row["samples_s"]) != row["stats"]["n"]:
            raise ValueError(f"rows[{i}]: {len(row['samples_s'])} samples but stats.n={row['stats']['n']}")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _nan_to_none(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    return o


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

NSYS_RECIPE = (
    "nsys profile -t cuda,nvtx -o gpudense-bench --force-overwrite true "
    "gpudense bench --shapes square --dtypes float32 --repeats 20"
)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--repeats``, ``--threads``).

    Example:
        >>> positive_int("3")
        3
    """
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (``--warmup``)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}")
    return value


def check_outputs(args: argparse.Namespace) -> None:
    """Fail at once, before the sweep, where ``--json``/``--table``/``--plot`` cannot be written.

    Creates each path's missing parent folders (as writing them would), and
    checks that ``--plot`` ends in ``.png``, that no path is an existing
    folder, that the folder is writable, and that matplotlib imports for ``--plot``.

    Raises:
        ValueError, OSError, RuntimeError: with a one-line message naming the option.
    """
    for flag, path in (("--json", args.json), ("--table", args.table), ("--plot", args.plot)):
        if not path:
            continue
        if flag == "--plot" and not path.lower().endswith(".png"):
            raise ValueError(f"--plot: expected a path ending in .png; got {path!r}")
        if os.path.isdir(path):
            raise ValueError(f"{flag}: expected a file path; {path!r} is a folder")
        parent = os.path.dirname(path) or "."
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise OSError(f"{flag}: cannot create the folder {parent!r}: "
                          f"{exc.strerror or exc}") from exc
        if not os.access(parent, os.W_OK):
            raise OSError(f"{flag}: the folder {parent!r} is not writable")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("--plot needs matplotlib; install gpudense[bench]") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gpudense bench``."""

    def one_line_error(message: str) -> None:
        # argparse would print the long usage first; one line, like run()'s errors.
        parser.exit(2, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")

    parser.error = one_line_error  # type: ignore[method-assign]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Default shapes (batch x in x out). GPU: small 128x64x64, tall-narrow 1048576x64x64,\n"
        "square 4096x4096x4096, transformer 8192x4096x16384; dtypes float32, tf32, float16.\n"
        "CPU: small 128x64x64, tall-narrow 1048576x64x64, square 2048x2048x2048,\n"
        "transformer 2048x1024x4096; dtype float32. --quick: CPU small, tall-narrow\n"
        "131072x64x64, square 512^3, 10 repeats (under a minute on 2 cores).\n"
        f"Nsight Systems timeline with NVTX stage ranges:\n  {NSYS_RECIPE}\n"
        "or add --nsys OUT to have gpudense run that for you."
    )
    parser.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"),
                        help="backend to time (default: auto)")
    parser.add_argument("--shapes", help="comma-separated shape names or BATCHxINxOUT")
    parser.add_argument("--dtypes", help=f"comma-separated, from {', '.join(DTYPES)}")
    parser.add_argument("--repeats", type=positive_int, help="timed repeats per stage (default 20; --quick 10)")
    parser.add_argument("--warmup", type=non_negative_int, help="untimed warm-up calls per stage (default 2)")
    parser.add_argument("--threads", type=positive_int,
                        help="CPU threads for BLAS and torch (default: all usable cores)")
    parser.add_argument("--quick", action="store_true", help="smaller sweep, under a minute on a CPU")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes and 3 repeats: checks the harness runs (for tests)")
    parser.add_argument("--json", metavar="PATH", help="write raw samples and environment as JSON")
    parser.add_argument("--table", metavar="PATH", help="also write the table to this file")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of fraction of ceiling per stage")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch.nn.Linear comparison")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--nsys", metavar="OUT",
                        help="re-run this command under `nsys profile -t cuda,nvtx -o OUT`")
    parser.add_argument("--_child-json", dest="child_json", help=argparse.SUPPRESS)
    parser.add_argument("--_child-copy-gbps", dest="child_copy_gbps", type=float,
                        help=argparse.SUPPRESS)


_FLAGS = ("backend", "shapes", "dtypes", "repeats", "warmup", "threads", "quick", "smoke",
          "json", "table", "plot", "no_torch", "no_progress", "seed", "nsys")


def argv_of(args: argparse.Namespace, *, drop: Sequence[str] = ()) -> list[str]:
    """The ``gpudense bench`` options that ``args`` stands for, as a command line."""
    argv: list[str] = []
    for key in _FLAGS:
        value = getattr(args, key, None)
        if key in drop or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def _nsys(args: argparse.Namespace) -> int:
    import shutil

    exe = shutil.which("nsys")
    if exe is None:
        raise RuntimeError("--nsys: nsys (Nsight Systems) is not on PATH; install it or run: "
                           + NSYS_RECIPE)
    argv = argv_of(args, drop=("nsys",))
    cmd = [exe, "profile", "-t", "cuda,nvtx", "-o", args.nsys, "--force-overwrite", "true",
           sys.executable, "-m", "gpudense", "bench"] + argv
    print(" ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd).returncode


def run(args: argparse.Namespace) -> int:
    """Run ``gpudense bench``; print the table; write JSON/plot where asked."""
    if args.child_json is None:
        check_outputs(args)  # before a sweep of minutes, not after it
    if args.nsys:
        return _nsys(args)
    if args.child_json:
        doc = sweep(args, copy_gbps_given=args.child_copy_gbps, progress=False)
        with open(args.child_json, "w", encoding="utf-8") as f:
            json.dump(doc, f, default=_json_default)  # NaN kept: the parent reads it back
        return 0
    doc = sweep(args)
    table = format_table(doc)
    print(table)
    sys.stdout.flush()
    if args.table:
        _write_text(args.table, table + "\n")
    if args.json:
        out = _nan_to_none(doc)
        check_document(out)
        _write_text(args.json, json.dumps(out, indent=1, default=_json_default) + "\n")
    if args.plot:
        write_plot(doc, args.plot)
    return 0


def _write_text(path: str, text: str) -> None:
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
