"""The ceilings a measurement is compared with, measured in the same run.

* :func:`copy_ceiling`: a large copy (bytes read plus bytes written); on a
  GPU one ``xp.copyto`` (a device-to-device memcpy), on a CPU split over as
  many threads as the stages use (:class:`ParallelCopy`).
* :func:`matmul_ceiling`: a large square matrix product per dtype (FLOP rate).

:func:`measure_ceilings` takes both, :func:`finish_ceilings` pools the samples
taken before and after a sweep, and :func:`add_rates` turns a row's median
into rates and fractions of them.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from gpudense.benchmark.config import CEILING_REPEATS, storage_dtype
from gpudense.benchmark.stats import copy_gbps, matmul_tflops, rates, summarize
from gpudense.benchmark.timing import calls_of, run_rounds, timer_for


def random_normal(xp: Any, gen: Any, shape: tuple[int, ...], dtype: Any, scale: float = 1.0) -> Any:
    """Normal numbers drawn in float32, scaled, then cast to ``dtype``: never zeros, never inf.

    Args:
        xp: The array module (``backend.xp``).
        gen: ``xp.random.default_rng(seed)``.
        shape, dtype: Of the result.
        scale: Standard deviation.

    Example:
        >>> random_normal(np, np.random.default_rng(0), (2, 3), np.float16).dtype
        dtype('float16')
    """
    a = gen.standard_normal(shape, dtype=np.float32)
    if scale != 1.0:
        a *= np.float32(scale)
    return a.astype(dtype, copy=False)


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``parts`` contiguous, nearly equal ``(start, stop)`` pieces.

    The first ``n % parts`` pieces are one element longer; no piece is empty.

    Raises:
        ValueError: ``n`` or ``parts`` below 1.

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

    Raises:
        ValueError: the arrays are not 1-D of one shape, or ``threads`` is below 1.

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

    def __enter__(self) -> ParallelCopy:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def copy_ceiling(backend: Any, nbytes: int, *, repeats: int, warmup: int, threads: int | None = None,
                 seed: int = 12345, on_call: Any = None) -> dict[str, Any]:
    """Time a copy of ``nbytes`` (a float32 array) ``repeats`` times; the one copy ceiling.

    On a GPU the copy is one ``xp.copyto`` (a device-to-device memcpy), timed
    with CUDA events. On a CPU it is split into ``threads`` contiguous chunks
    copied at once by ``threads`` threads (:class:`ParallelCopy`; None means
    1), so that the bandwidth is measured at the thread count the stages run
    with; the whole copy is timed. Afterwards one element per MiB is compared
    between source and destination.

    Args:
        backend: The backend whose memory is copied.
        nbytes: Bytes to copy (a multiple of 4).
        repeats, warmup: Timed and untimed copies (see :func:`run_rounds`).
        threads: CPU threads (ignored on a GPU).
        seed: Seed of the random source array.
        on_call: Called after every copy (see :func:`run_rounds`).

    Returns:
        ``{"bytes", "samples_s", "how", "verified"}``, plus ``"threads"`` on a
        CPU. Rates: :func:`~gpudense.benchmark.stats.copy_gbps`.

    Example:
        >>> from gpudense.backends import get_backend
        >>> c = copy_ceiling(get_backend("numpy"), 1 << 20, repeats=3, warmup=1)
        >>> len(c["samples_s"]), c["verified"]
        (3, True)
    """
    xp = backend.xp
    src = random_normal(xp, xp.random.default_rng(seed), (int(nbytes) // 4,), np.float32)
    dst = xp.empty_like(src)
    timer, nvtx = timer_for(backend), backend.nvtx_range
    out: dict[str, Any] = {"bytes": int(nbytes)}
    if backend.name == "cupy":
        ss = run_rounds({"copy": lambda k: xp.copyto(dst, src)}, n_sets=1, repeats=repeats,
                        warmup=warmup, timer=timer, nvtx=nvtx, rounds=1, on_call=on_call)["copy"]
        out.update(samples_s=ss, how="copyto of a float32 array; bytes read + written")
    else:
        n = threads or 1
        with ParallelCopy(dst, src, threads=n) as pcopy:
            ss = run_rounds({"copy": lambda k: pcopy()}, n_sets=1, repeats=repeats,
                            warmup=warmup, timer=timer, nvtx=nvtx, rounds=1, on_call=on_call)["copy"]
        out.update(samples_s=ss, threads=n,
                   how=f"copyto of a float32 array in {n} contiguous chunks by {n} threads at once; "
                       "bytes read + written")
    step = max(1, (1 << 20) // 4)  # one float32 per MiB
    out["verified"] = bool((dst[::step] == src[::step]).all())
    return out


def matmul_ceiling(backend: Any, dtype: str, n: int, *, repeats: int, warmup: int,
                   seed: int = 12345, on_call: Any = None) -> dict[str, Any]:
    """Time ``c = a @ b`` for ``n x n`` random matrices of a benchmark dtype (see :func:`storage_dtype`).

    The product is the backend's own (``backend.matmul``), as the layer's
    stages compute it: on NumPy, float16 and bfloat16 go through float32 BLAS.

    Returns:
        ``{"n", "samples_s"}``. Rates: :func:`~gpudense.benchmark.stats.matmul_tflops`.
    """
    xp = backend.xp
    gen = xp.random.default_rng(seed)
    dt = storage_dtype(dtype)
    a = random_normal(xp, gen, (n, n), dt)
    b = random_normal(xp, gen, (n, n), dt, 1.0 / math.sqrt(n))
    c = xp.empty((n, n), dtype=dt)
    ss = run_rounds({"mm": lambda k: backend.matmul(a, b, out=c)}, n_sets=1, repeats=repeats,
                    warmup=warmup, timer=timer_for(backend), nvtx=backend.nvtx_range, rounds=1,
                    on_call=on_call)["mm"]
    return {"n": int(n), "samples_s": ss}


def _ceiling_counts(repeats: int, warmup: int) -> tuple[int, int]:
    """A ceiling's timed and warm-up calls: at most :data:`CEILING_REPEATS` and 1, whatever the run's are."""
    return min(repeats, CEILING_REPEATS), min(warmup, 1)


def ceiling_calls(n_dtypes: int, *, copy: bool, repeats: int, warmup: int) -> int:
    """How many calls :func:`measure_ceilings` makes (what its ``on_call`` counts).

    Example:
        >>> ceiling_calls(2, copy=True, repeats=20, warmup=2)  # 3 ceilings, 10 timed + 1 warm-up each
        33
    """
    r, w = _ceiling_counts(repeats, warmup)
    return (int(copy) + n_dtypes) * calls_of(1, repeats=r, warmup=w, rounds=1)


def measure_ceilings(backend: Any, dtypes: Sequence[str], *, sizes: dict[str, int], repeats: int,
                     warmup: int, copy: bool = True, threads: int | None = None,
                     on_call: Any = None) -> dict[str, Any]:
    """The copy ceiling (unless ``copy`` is False) and a matrix-product ceiling per dtype.

    Each ceiling takes ``min(repeats, CEILING_REPEATS)`` timed calls after
    ``min(warmup, 1)`` warm-up calls: its rate comes from the fastest sample,
    which a few samples show as well as many, so the ceilings cost seconds
    however many repeats the stages take.

    Args:
        backend: The backend timed.
        dtypes: Benchmark dtype names.
        sizes: ``{"copy_bytes", "matmul_n"}`` (see
            :func:`~gpudense.benchmark.config.ceiling_sizes`).
        repeats, warmup: The run's; each ceiling takes at most
            :data:`~gpudense.benchmark.config.CEILING_REPEATS` and 1 of them.
        copy: Measure the copy (a child process takes its parent's instead).
        threads: CPU threads of the copy.
        on_call: Called after every call (:func:`ceiling_calls` counts them).

    Returns:
        ``{"copy": copy_ceiling(...) or None, "matmul": {dtype: matmul_ceiling(...)}}``.
    """
    repeats, warmup = _ceiling_counts(repeats, warmup)
    out: dict[str, Any] = {"copy": None, "matmul": {}}
    if copy:
        out["copy"] = copy_ceiling(backend, int(sizes["copy_bytes"]), repeats=repeats,
                                   warmup=warmup, threads=threads, on_call=on_call)
    for d in dtypes:
        out["matmul"][d] = matmul_ceiling(backend, d, int(sizes["matmul_n"]), repeats=repeats,
                                          warmup=warmup, on_call=on_call)
    return out


def finish_ceilings(first: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    """Pool the samples of ceiling measurements (taken before and after the sweep).

    A ceiling is what the machine can do, so its rate comes from the fastest
    sample (``gbps``, ``tflops``); the median's rate is kept beside it
    (``gbps_median``, ``tflops_median``). Rows compare their median with the
    fastest ceiling sample, so a busy phase of a shared machine during one of
    the two measurements does not inflate the fractions. A copy given without
    samples (a child process gets its parent's) is kept as it is.

    Example:
        >>> c = {"copy": {"bytes": 10**9, "samples_s": [1.0]}, "matmul": {}}
        >>> finish_ceilings(c)["copy"]["gbps"]
        2.0
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
        if any("verified" in c for c in copies):
            out["copy"]["verified"] = all(c.get("verified", False) for c in copies)
    elif first.get("copy"):
        out["copy"] = first["copy"]
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
    """Fill each row's rates and fractions from its median and the pooled ceilings (in place)."""
    peak_gbps = ceilings["copy"]["gbps"] if ceilings.get("copy") else None
    for row in rows:
        mm = ceilings["matmul"].get(row["dtype"])
        row.update(rates(row["flops"], row["bytes"], row["stats"]["median"],
                         peak_tflops=mm["tflops"] if mm else None, peak_gbps=peak_gbps))
