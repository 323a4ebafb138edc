"""Facts about the machine a benchmark runs on: caches, device memory, thread pools, versions.

Versions come from :func:`gpudense.backends.facts.collect` and device facts from the
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


def busy_warning(load: float | None = None, cores: int | None = None) -> str | None:
    """A warning when other work keeps the machine busy, else None.

    Ceilings and timings measured under load are both lowered, by different
    amounts, so rows can read over 100% "of ceiling". The machine counts as
    busy when the load average over the last minute (``os.getloadavg``) is
    at least ``max(0.75, cores / 10)``: on a small machine, about one core
    kept busy by something else.

    Args:
        load: The 1-minute load average (default: the system's; None where
            the system has none).
        cores: The cores this process may run on (default: its CPU affinity).

    Example:
        >>> busy_warning(0.1, 2) is None
        True
        >>> busy_warning(1.9, 2)  # doctest: +ELLIPSIS
        'the machine is busy: load average 1.90 over the last minute on 2 cores; ...'
    """
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows has none
            return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load < max(0.75, cores / 10):
        return None
    return (f"the machine is busy: load average {load:.2f} over the last minute on {cores} "
            f"core{'s' if cores != 1 else ''}; the ceilings and the timings are both measured under that "
            "load, so rows can read over 100% of ceiling: keep figures from a quiet machine")


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
        :func:`gpudense.backends.facts.collect`'s facts, then ``backend.describe()``'s,
        and ``cpu_model``, ``cpu_count``, ``bench_backend``, ``threads``,
        ``hostname``, ``blas``, ``env_vars``, ``torch`` (and
        ``torch_threads`` where torch imports).
    """
    from gpudense.backends.numpy_backend import cpu_model
    from gpudense.backends.facts import collect

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
