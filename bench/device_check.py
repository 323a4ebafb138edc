"""Time gpudense's bias-gradient kernel against ``dy.sum(axis=0)`` and ``ones @ dy`` on a GPU.

Run by bench/device_check.sh (after the GPU tests), or on its own from a
plain checkout:

    PYTHONPATH=$PWD python3 bench/device_check.py [--out DIR] [--quick]

For each shape of the sweep and float32/float16 it times, with CUDA events,
the three ways of computing ``db = dy.sum(0)``; buffers rotate so that the
arrays read add up to more than twice the L2 cache; warm-up first, the
median of repeats is reported. A large device-to-device copy is timed in the
same run and each method's bandwidth (bytes of dy read + db written, per
second) is given as a fraction of the copy's (bytes read + written).

Raw results go to ``DIR/device_check.json`` (``$OUT`` when set, else
bench/results/); the table is printed last. Nothing is installed; CuPy is
imported only in :func:`main` and the timing helpers, so the formatting
functions import and run on a machine without a GPU.

:func:`time_cuda` is the reusable timing helper.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

SWEEP = [(65536, 4096), (8192, 16384), (1048576, 64), (256, 4096), (32, 1024)]
DTYPES = ("float32", "float16")
METHODS = ("gpudense kernel", "dy.sum(axis=0)", "ones @ dy (cuBLAS)")


def time_cuda(
    fn: Callable[[int], Any],
    *,
    warmup: int = 5,
    repeat: int = 25,
    min_sample_ms: float = 0.5,
    max_inner: int = 200,
) -> list[float]:
    """Milliseconds per call of ``fn(i)``, measured with CUDA events on the current stream.

    ``fn`` gets a running call index (use it to rotate input buffers). After
    ``warmup`` calls, one timed call sets how many calls each sample holds
    (``inner``, so that a sample lasts at least ``min_sample_ms``, which
    keeps event resolution and launch jitter out of short kernels); then
    ``repeat`` samples are taken, each the events' elapsed time over
    ``inner`` calls, divided by ``inner``.

    Returns:
        ``repeat`` per-call times in milliseconds (take the median).

    Example:
        >>> times = time_cuda(lambda i: a.sum(), repeat=10)  # doctest: +SKIP
        >>> statistics.median(times)  # doctest: +SKIP
    """
    import cupy as cp

    stream = cp.cuda.get_current_stream()
    call = 0
    for _ in range(warmup):
        fn(call)
        call += 1
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record(stream)
    fn(call)
    call += 1
    end.record(stream)
    end.synchronize()
    one = max(cp.cuda.get_elapsed_time(start, end), 1e-3)
    inner = int(min(max_inner, max(1, math.ceil(min_sample_ms / one))))
    times = []
    for _ in range(repeat):
        start.record(stream)
        for _ in range(inner):
            fn(call)
            call += 1
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / inner)
    return times


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
    """One measurement as a JSON-ready dict: median time, GB/s and fraction of the copy bandwidth."""
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


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table: shape, dtype, method, median ms, GB/s, % of copy, speed-up of the kernel."""
    kernel_ms = {
        (tuple(r["shape"]), r["dtype"]): r["median_ms"] for r in rows if r["method"] == METHODS[0]
    }
    head = f"{'shape':>14} {'dtype':>8} {'method':>20} {'median ms':>10} {'GB/s':>8} {'% copy':>7} {'kernel x':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        k = kernel_ms.get((tuple(r["shape"]), r["dtype"]))
        speed = f"{r['median_ms'] / k:9.2f}" if k and r["method"] != METHODS[0] else f"{'':9}"
        lines.append(
            f"{shape:>14} {r['dtype']:>8} {r['method']:>20} {r['median_ms']:10.4f} {r['gbps']:8.1f} "
            f"{100 * r['fraction_of_copy']:6.1f}% {speed}"
        )
    lines.append("kernel x: how many times longer the method takes than the gpudense kernel")
    return "\n".join(lines)


def write_json(data: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``data`` to ``out_dir/device_check.json`` (directories created); returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "device_check.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def facts() -> dict[str, Any]:
    """Device, driver and library versions, and the date (UTC)."""
    import cupy as cp
    import numpy as np

    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    free, total = cp.cuda.runtime.memGetInfo()
    from gpudense._nvtx import nvtx_provider

    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": name,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "multiprocessors": props["multiProcessorCount"],
        "l2_bytes": props["l2CacheSize"],
        "memory_total_bytes": total,
        "memory_free_bytes": free,
        "cuda_driver": cp.cuda.runtime.driverGetVersion(),
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "cupy": cp.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nvtx": nvtx_provider(),
    }


def copy_bandwidth(nbytes: int = 2**30, *, repeat: int = 25) -> dict[str, Any]:
    """A device-to-device ``cudaMemcpyAsync`` of ``nbytes``: GB/s counting bytes read plus written."""
    import cupy as cp

    src = cp.random.randint(0, 255, nbytes, dtype=cp.uint8)
    dst = cp.empty_like(src)
    stream = cp.cuda.get_current_stream()

    def copy(_i: int) -> None:
        cp.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes,
                                    cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr)

    times = time_cuda(copy, repeat=repeat)
    ok = bool((dst[:: 1 << 20] == src[:: 1 << 20]).all())
    median = statistics.median(times)
    return {"bytes_copied": nbytes, "median_ms": median, "times_ms": times,
            "gbps": 2 * nbytes / (median * 1e-3) / 1e9, "verified": ok}


def bench_shape(backend: Any, shape: tuple[int, int], dtype: str, *, l2_bytes: int, copy_gbps: float,
                repeat: int) -> list[dict[str, Any]]:
    """Time the three methods on one shape and dtype; rows for :func:`result_row`."""
    import cupy as cp
    import numpy as np

    batch, m = shape
    dt = np.dtype(dtype)
    one = batch * m * dt.itemsize
    n_buf = max(2, math.ceil(2 * l2_bytes / one) + 1)
    bufs = cp.random.standard_normal((n_buf, batch, m), dtype=cp.float32).astype(dt, copy=False)
    out = cp.empty(m, dt)
    ones = cp.ones((1, batch), dt)
    # Correctness of the timed kernel on the first buffer, against float64.
    got = backend.bias_grad(bufs[0], out).get().astype(np.float64)
    want = bufs[0].astype(cp.float64).sum(axis=0).get()
    rel = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))
    fns = {
        METHODS[0]: lambda i: backend.bias_grad(bufs[i % n_buf], out),
        METHODS[1]: lambda i: bufs[i % n_buf].sum(axis=0),
        METHODS[2]: lambda i: cp.matmul(ones, bufs[i % n_buf]),
    }
    rows = []
    moved = one + m * dt.itemsize
    for method, fn in fns.items():
        times = time_cuda(fn, repeat=repeat)
        extra = {"buffers": n_buf, "buffer_bytes_total": n_buf * one}
        if method == METHODS[0]:
            extra["rel_error_vs_float64"] = rel
        rows.append(result_row(method, shape, dtype, times_ms=times, bytes_moved=moved,
                               copy_gbps=copy_gbps, **extra))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"),
                        help="directory for device_check.json (default: $OUT, else bench/results)")
    parser.add_argument("--repeat", type=int, default=25, help="timed samples per measurement")
    parser.add_argument("--quick", action="store_true", help="only the two smallest shapes, 5 samples")
    args = parser.parse_args(argv)

    import cupy as cp

    from gpudense.backends import get_backend

    backend = get_backend("cupy")
    info = facts()
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    sweep = SWEEP[-2:] if args.quick else SWEEP
    repeat = 5 if args.quick else args.repeat
    copy = copy_bandwidth(repeat=repeat)
    cp.get_default_memory_pool().free_all_blocks()
    print(f"device-to-device copy: {copy['gbps']:.1f} GB/s (read + write), median {copy['median_ms']:.3f} ms",
          flush=True)
    rows: list[dict[str, Any]] = []
    for shape in sweep:
        for dtype in DTYPES:
            rows.extend(bench_shape(backend, shape, dtype, l2_bytes=info["l2_bytes"],
                                    copy_gbps=copy["gbps"], repeat=repeat))
            cp.get_default_memory_pool().free_all_blocks()  # this shape's buffers are gone
            print(f"timed {shape} {dtype}", flush=True)
    # The copy again at the end: a drift between the two shows clocks or other load changed meanwhile.
    copy_end = copy_bandwidth(repeat=repeat)
    print(f"device-to-device copy at the end: {copy_end['gbps']:.1f} GB/s", flush=True)
    path = write_json({"facts": info, "copy": copy, "copy_at_end": copy_end, "results": rows}, args.out)
    print(f"raw results: {path}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
