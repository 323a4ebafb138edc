"""Facts about the machine a benchmark runs on: caches, device memory, thread pools, versions.

Versions come from :func:`gpudense.info.collect` and device facts from the
backend's ``describe()``; the CUDA device's L2 size and memory are read
through the CuPy backend's array module (``backend.xp``), so nothing here
imports CuPy.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from typing import Any

import gpudense._env as _env

#: Environment variables recorded with every run.
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "CUPY_TF32", "GPUDENSE_BACKEND")


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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


def device_memory(backend: Any) -> dict[str, int]:
    """The current CUDA device's L2 cache size and free and total memory, in bytes.

    Args:
        backend: The CuPy backend (its ``xp`` is the CuPy module).

    Returns:
        ``{"l2_bytes", "memory_free_bytes", "memory_total_bytes"}``.
    """
    cuda = backend.xp.cuda
    props = cuda.runtime.getDeviceProperties(cuda.Device().id)
    free, total = cuda.runtime.memGetInfo()
    return {"l2_bytes": int(props["l2CacheSize"]), "memory_free_bytes": int(free),
            "memory_total_bytes": int(total)}


def rotation_sizes(backend: Any) -> tuple[int, int]:
    """``(cache_bytes, budget_bytes)``: the cache rotating inputs must exceed, and the memory they may use.

    On a GPU the L2 and an eighth of the free memory (at most 2 GiB); on a
    CPU the last-level cache and 512 MiB.
    """
    if backend.name == "cupy":
        mem = device_memory(backend)
        return mem["l2_bytes"], int(min(2 << 30, mem["memory_free_bytes"] // 8))
    return cache_bytes_cpu(), 512 << 20


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of the loaded BLAS/OpenMP pools (kernel, threads), or []."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [dict(d) for d in threadpool_info()]


def environment(backend: Any, threads: int | None) -> dict[str, Any]:
    """Facts recorded with every run: gpudense info, the backend's device, CPU, threads, BLAS, torch.

    Args:
        backend: The backend being timed.
        threads: The run's CPU thread count (None on a GPU).

    Returns:
        :func:`gpudense.info.collect`'s facts, then ``backend.describe()``'s,
        and ``cpu_model``, ``cpu_count``, ``bench_backend``, ``threads``,
        ``hostname``, ``blas``, ``env_vars``, ``torch`` (and
        ``torch_threads`` where torch imports).
    """
    from gpudense.backends.numpy_backend import cpu_model
    from gpudense.info import collect

    env: dict[str, Any] = dict(collect())
    env.update(backend.describe())
    env["cpu_model"] = cpu_model()
    env["cpu_count"] = os.cpu_count()
    env["bench_backend"] = backend.name
    env["threads"] = threads
    env["hostname"] = platform.node()
    env["blas"] = blas_info()
    env["env_vars"] = _env.values(ENV_VARS)
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        env["torch"] = f"not importable ({type(exc).__name__})"
    else:
        from gpudense.benchmark.isolation import torch_facts

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["torch_blas"] = torch_facts()  # torch's own BLAS (MKL in the pip wheels), CPU path, threads
    return env
