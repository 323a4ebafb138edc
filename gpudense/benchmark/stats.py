"""The arithmetic of a benchmark: statistics of timing samples, the work of a stage, rates and ceilings.

Pure functions of numbers; nothing here times anything.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from gpudense.benchmark.config import COMPARISONS, STAGES


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

    Raises:
        ValueError: the lists differ in length or are empty, or a reference time is <= 0.

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
        stage: one of :data:`~gpudense.benchmark.config.STAGES` or
            :data:`~gpudense.benchmark.config.COMPARISONS`.
        batch, n_in, n_out: the layer shape.
        itemsize: bytes per element (4 for float32 and tf32, 2 for float16).

    Returns:
        ``(flops, bytes)`` as ints.

    Raises:
        ValueError: an unknown stage.

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
