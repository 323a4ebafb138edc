"""The bias-gradient device check: gpudense's kernel against ``dy.sum(axis=0)`` and ``ones @ dy`` on a GPU.

Run by bench/gpu_validation.sh, or on its own from a plain checkout:

    PYTHONPATH=$PWD python3 bench/device_check.py [--out DIR] [--repeat N] [--quick] [--dtypes D,...]

For each shape of :data:`SWEEP` and each of
:data:`DTYPES` (or ``--dtypes``) it times, with CUDA events
(:class:`~gpudense.benchmark.timing.CudaTimer` through
:func:`~gpudense.benchmark.timing.time_per_call`), the three ways of
computing ``db = dy.sum(0)``; buffers rotate so that the arrays read add up
to more than twice the L2 cache; warm-up first, the methods alternating in
rounds (:func:`alternating_ms`), the median of repeats is reported, and each
method's time over the kernel's, paired by round. The copy ceiling (:func:`~gpudense.benchmark.ceilings.copy_ceiling`)
is measured in the same run, at its start and its end, and each method's
bandwidth (bytes of ``dy`` read + ``db`` written, per second) is given as a
fraction of the first copy's (bytes read + written). The results go to
``DIR/device_check.json``, rewritten after every shape, so a stopped run keeps what it
measured. ``DIR`` is ``$OUT`` when set, else bench/results/.

The formatting functions run on any machine; :func:`run_device_check` needs
the CuPy backend.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gpudense.benchmark.ceilings import copy_ceiling, random_normal
from gpudense.benchmark.machine import device_memory, utc_now
from gpudense.benchmark.report import json_text, markdown_table, write_text
from gpudense.benchmark.stats import copy_gbps as _copy_gbps
from gpudense.benchmark.stats import paired_ratio
from gpudense.benchmark.timing import CudaTimer, time_per_call
from gpudense.cli._common import int_at_least

#: ``(batch, n_out)`` shapes of ``dy``.
SWEEP = [(65536, 4096), (8192, 16384), (1048576, 64), (256, 4096), (32, 1024)]
DTYPES = ("float32", "float16", "bfloat16")
METHODS = ("gpudense kernel", "dy.sum(axis=0)", "ones @ dy (cuBLAS)")
#: Bytes of the device-to-device copy.
COPY_BYTES = 1 << 30
#: Rounds the repeats are split into; the methods run in reverse order in every other round.
ROUNDS = 4


def alternating_ms(fns: dict[str, Callable[[int], Any]], timer: Any, *, repeat: int,
                   rounds: int = ROUNDS) -> dict[str, list[float] | str]:
    """Per-call times in ms of every ``fns[name](i)``, the methods alternating, or why one failed.

    The repeats are split into ``rounds``; in each round every method runs as
    one block (:func:`~gpudense.benchmark.timing.time_per_call`: warm-up
    calls, then its share of samples), in reverse order in every other round,
    so no method always follows the same one and sample ``i`` of each method
    comes from the same round (:func:`~gpudense.benchmark.stats.paired_ratio`
    pairs them). A method that raises gets the error, one line, instead of
    samples, and is not called again.

    Example:
        >>> from gpudense.benchmark.timing import CpuTimer
        >>> got = alternating_ms({"a": lambda i: None, "b": lambda i: 1 / 0}, CpuTimer(), repeat=6)
        >>> len(got["a"]), got["b"]
        (6, 'failed: ZeroDivisionError: division by zero')
    """
    shares = [repeat // rounds + (r < repeat % rounds) for r in range(rounds)]
    out: dict[str, list[float] | str] = {name: [] for name in fns}
    for r, share in enumerate(s for s in shares if s):
        for name in (list(fns)[::-1] if r % 2 else list(fns)):
            if isinstance(out[name], str):
                continue
            try:
                out[name] += [t * 1e3 for t in time_per_call(fns[name], timer, repeat=share,
                                                             warmup=5 if r == 0 else 2)]
            except Exception as exc:  # e.g. an array-module operation this dtype lacks: say so, go on
                text = str(exc).splitlines()[0] if str(exc) else ""
                out[name] = f"failed: {type(exc).__name__}: {text}".rstrip(": ")
    return out


def result_row(
    method: str,
    shape: Sequence[int],
    dtype: str,
    *,
    times_ms: Sequence[float],
    bytes_moved: int,
    copy_gbps: float,
    **extra: Any,
) -> dict[str, Any]:
    """One measurement as a JSON-ready dict: median time, GB/s and fraction of the copy bandwidth.

    Args:
        method: One of :data:`METHODS`.
        shape: ``(batch, n_out)`` of ``dy``.
        dtype: Its dtype name.
        times_ms: Per-call times in milliseconds.
        bytes_moved: Bytes one call reads and writes.
        copy_gbps: The copy bandwidth of the same run (read + write).
        **extra: More keys for the row.

    Returns:
        ``{"method", "shape", "dtype", "median_ms", "min_ms", "max_ms",
        "repeats", "times_ms", "bytes", "gbps", "fraction_of_copy", **extra}``;
        the fraction is NaN where ``copy_gbps`` is not positive.

    Example:
        >>> result_row("dy.sum(axis=0)", (32, 1024), "float16", times_ms=[0.5], bytes_moved=10**6,
        ...            copy_gbps=4.0)["fraction_of_copy"]
        0.5
    """
    median = statistics.median(times_ms)
    gbps = bytes_moved / (median * 1e-3) / 1e9
    row = {
        "method": method,
        "shape": [int(s) for s in shape],
        "dtype": dtype,
        "median_ms": median,
        "min_ms": min(times_ms),
        "max_ms": max(times_ms),
        "repeats": len(times_ms),
        "times_ms": list(times_ms),
        "bytes": int(bytes_moved),
        "gbps": gbps,
        "fraction_of_copy": gbps / copy_gbps if copy_gbps > 0 else float("nan"),
    }
    row.update(extra)
    return row


def results_table(rows: Sequence[dict[str, Any]], baseline: str = METHODS[0]) -> str:
    """The rows as a Markdown table: shape, dtype, method, median ms, GB/s, % of copy, kernel x.

    "kernel x" is how many times longer a method takes than the ``baseline``
    method (the gpudense kernel) on the same shape, dtype and activation (a
    line under the table says so). A row with a ``"skipped"`` entry was not
    measured; the table says why.
    """
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(r["shape"]), r["dtype"], r.get("activation")

    kernel_ms = {key(r): r["median_ms"] for r in rows if r["method"] == baseline and "skipped" not in r}
    cells = []
    for r in rows:
        method = r["method"] + (f" ({r['activation']})" if r.get("activation") else "")
        if "skipped" in r:
            cells.append(["x".join(str(s) for s in r["shape"]), r["dtype"], f"{method}: skipped, {r['skipped']}",
                          "-", "-", "-", ""])
            continue
        k = kernel_ms.get(key(r))
        frac = r["fraction_of_copy"]
        cells.append([
            "x".join(str(s) for s in r["shape"]), r["dtype"], method,
            f"{r['median_ms']:.4f}", f"{r['gbps']:.1f}",
            "-" if frac is None or math.isnan(frac) else f"{100 * frac:.1f}",
            f"{r['median_ms'] / k:.2f}" if k and r["method"] != baseline else "",
        ])
    head = ["shape", "dtype", "method", "median ms", "GB/s", "% copy", "kernel x"]
    lines = markdown_table(head, cells, "lllrrrr")
    lines.append("kernel x: how many times longer the method takes than the gpudense kernel")
    return "\n".join(lines)


def write_json(data: dict[str, Any], out_dir: str | Path, name: str = "device_check.json") -> Path:
    """Write ``data`` to ``out_dir/name`` (folders created; NaN as null); returns the path."""
    path = Path(out_dir) / name
    write_text(path, json_text(data))
    return path


def device_facts(backend: Any) -> dict[str, Any]:
    """The date (UTC), gpudense info's versions, the backend's device facts, and the L2 and memory sizes."""
    from gpudense.backends.facts import collect

    facts: dict[str, Any] = {"date_utc": utc_now()}
    facts.update(collect())
    facts.update(backend.describe())
    facts.update(device_memory(backend))
    return facts


def copy_check(backend: Any, *, repeat: int, nbytes: int = COPY_BYTES) -> dict[str, Any]:
    """The copy ceiling, summarised by its median: ``{"bytes_copied", "median_ms", "times_ms", "gbps", "verified", "how"}``."""
    c = copy_ceiling(backend, nbytes, repeats=repeat, warmup=2)
    median_s = statistics.median(c["samples_s"])
    return {"bytes_copied": nbytes, "median_ms": median_s * 1e3,
            "times_ms": [t * 1e3 for t in c["samples_s"]], "gbps": _copy_gbps(nbytes, median_s),
            "verified": c["verified"], "how": c["how"]}


def time_methods(backend: Any, shape: tuple[int, int], dtype: str, *, l2_bytes: int, copy_gbps: float,
                 repeat: int, seed: int = 0) -> list[dict[str, Any]]:
    """Time the three :data:`METHODS` on one shape and dtype; one :func:`result_row` each.

    A method that raises (an array-module operation missing for the dtype)
    gets a row with ``"skipped"`` and the error instead of times.

    ``dy`` rotates through ``max(2, ceil(2 * l2_bytes / bytes of dy) + 1)``
    random buffers; the methods alternate (:func:`alternating_ms`). The
    kernel's row also holds its relative error against a float64 sum of the
    first buffer, the other rows ``paired_ratio_vs_kernel``: the median over
    samples of (method's time / kernel's time), samples paired by round.
    """
    xp = backend.xp
    batch, m = shape
    dt = np.dtype(dtype)
    one = batch * m * dt.itemsize
    n_buf = max(2, math.ceil(2 * l2_bytes / one) + 1)
    bufs = random_normal(xp, xp.random.default_rng(seed), (n_buf, batch, m), dt)
    out = xp.empty(m, dt)
    ones = xp.ones((1, batch), dt)
    # Correctness of the timed kernel on the first buffer, against float64.
    got = backend.to_numpy(backend.bias_grad(bufs[0], out)).astype(np.float64)
    try:
        want = backend.to_numpy(bufs[0].astype(xp.float64).sum(axis=0))
    except Exception:  # an array module without this dtype's conversion: sum on the host
        want = backend.to_numpy(bufs[0]).astype(np.float64).sum(axis=0)
    rel = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))
    fns: dict[str, Callable[[int], Any]] = {
        METHODS[0]: lambda i: backend.bias_grad(bufs[i % n_buf], out),
        METHODS[1]: lambda i: bufs[i % n_buf].sum(axis=0),
        METHODS[2]: lambda i: xp.matmul(ones, bufs[i % n_buf]),
    }
    moved = one + m * dt.itemsize
    times = alternating_ms(fns, CudaTimer(xp), repeat=repeat)
    kernel = times[METHODS[0]]
    rows = []
    for method, samples in times.items():
        if isinstance(samples, str):
            rows.append({"method": method, "shape": [int(s) for s in shape], "dtype": dtype, "skipped": samples})
            continue
        extra: dict[str, Any] = {"buffers": n_buf, "buffer_bytes_total": n_buf * one}
        if method == METHODS[0]:
            extra["rel_error_vs_float64"] = rel
        elif not isinstance(kernel, str):
            extra["paired_ratio_vs_kernel"] = paired_ratio(samples, kernel)
        rows.append(result_row(method, shape, dtype, times_ms=samples, bytes_moved=moved,
                               copy_gbps=copy_gbps, **extra))
    return rows


def run_device_check(out_dir: str | Path, *, repeat: int = 25, quick: bool = False,
                     copy_bytes: int = COPY_BYTES, dtypes: Sequence[str] = DTYPES,
                     log: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]]:
    """Run the whole check on the CuPy backend and write ``out_dir/device_check.json``.

    Args:
        out_dir: Folder of the JSON (created if missing).
        repeat: Timed samples per measurement (``quick``: 5).
        quick: Only the two smallest shapes.
        copy_bytes: Bytes of the device-to-device copy.
        dtypes: The dtypes to time (names of :data:`DTYPES`).
        log: Receives one line per step (facts, copies, each shape timed).

    Returns:
        ``(path, {"facts", "copy", "copy_at_end", "results"})``. The file is
        written after the copy and after each shape as well, so a run that
        is stopped keeps what it measured (``copy_at_end`` is then missing).

    Raises:
        BackendUnavailableError: CuPy or a CUDA device is missing.

    Example:
        >>> path, data = run_device_check("bench/results", quick=True)  # doctest: +SKIP
        >>> print(results_table(data["results"]))  # doctest: +SKIP
    """
    from gpudense.backends import get_backend

    backend = get_backend("cupy")
    pool = backend.xp.get_default_memory_pool()
    info = device_facts(backend)
    log(" ".join(f"{k}={v}" for k, v in info.items()))
    shapes = SWEEP[-2:] if quick else SWEEP
    repeat = 5 if quick else repeat
    copy = copy_check(backend, repeat=repeat, nbytes=copy_bytes)
    pool.free_all_blocks()
    log(f"device-to-device copy: {copy['gbps']:.1f} GB/s (read + write), median {copy['median_ms']:.3f} ms")
    rows: list[dict[str, Any]] = []
    write_json({"facts": info, "copy": copy, "results": rows}, out_dir)
    for shape in shapes:
        for dtype in dtypes:
            rows.extend(time_methods(backend, shape, dtype, l2_bytes=info["l2_bytes"],
                                     copy_gbps=copy["gbps"], repeat=repeat))
            pool.free_all_blocks()  # this shape's buffers are gone
            write_json({"facts": info, "copy": copy, "results": rows}, out_dir)
            log(f"timed {shape} {dtype}")
    # The copy again at the end: a drift between the two shows clocks or other load changed meanwhile.
    copy_end = copy_check(backend, repeat=repeat, nbytes=copy_bytes)
    pool.free_all_blocks()
    log(f"device-to-device copy at the end: {copy_end['gbps']:.1f} GB/s")
    data = {"facts": info, "copy": copy, "copy_at_end": copy_end, "results": rows}
    return write_json(data, out_dir), data


def dtype_list(text: str) -> tuple[str, ...]:
    """``"float32,bfloat16"`` as a tuple of names of :data:`DTYPES`; argparse's type for ``--dtypes``.

    Example:
        >>> dtype_list("float32, bfloat16")
        ('float32', 'bfloat16')
    """
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected dtypes among {', '.join(DTYPES)}; got {text!r}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"),
                        help="directory for the JSON (default: $OUT, else bench/results)")
    parser.add_argument("--repeat", type=int_at_least(1), default=25, help="timed samples per measurement")
    parser.add_argument("--quick", action="store_true", help="only the smallest shapes, 5 samples")
    parser.add_argument("--dtypes", type=dtype_list, default=",".join(DTYPES),
                        help=f"bias stage: comma-separated dtypes (default {','.join(DTYPES)})")
    args = parser.parse_args(argv)

    path, data = run_device_check(args.out, repeat=args.repeat, quick=args.quick, dtypes=args.dtypes,
                                  log=lambda line: print(line, flush=True))
    print(f"raw results: {path}")
    print(results_table(data["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
