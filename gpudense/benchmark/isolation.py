"""Keeping contenders apart on a CPU: worker threads that spin after a call, and what each library runs on.

OpenBLAS's worker threads keep spinning for a while after a threaded call
returns (about 0.1 s: OpenBLAS's default thread timeout is 2^28 cycles),
and OpenMP's (torch, MKL) for a few milliseconds. Timed right after such a
call, another library's threaded call shares the cores with spinning threads
and runs slower. :func:`spin_down` waits until the other threads of this
process have gone quiet; :class:`SpinDown` does it before every block of the
benchmark and records how long it waited.

:func:`torch_facts` records what torch computes with (its BLAS library and
version, the CPU code path, threads), beside NumPy's BLAS pools that
:func:`gpudense.benchmark.machine.blas_info` reads with threadpoolctl.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

from gpudense.benchmark.stats import summarize

_TASKS = "/proc/self/task"


def other_threads_cpu_s() -> float | None:
    """CPU seconds used so far by every thread of this process but the caller; None where unknown.

    Read from ``/proc/self/task/*/schedstat`` (Linux): nanoseconds on the CPU.
    """
    try:
        tids = os.listdir(_TASKS)
    except OSError:
        return None
    me = threading.get_native_id()
    total = 0
    for tid in tids:
        if tid == str(me):
            continue
        try:
            with open(f"{_TASKS}/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended, or schedstat is off
    return total / 1e9


def spin_down(*, quiet_s: float = 0.02, max_s: float = 1.0, poll_s: float = 0.002,
              busy_fraction: float = 0.05) -> float:
    """Sleep until this process's other threads have been (almost) idle for ``quiet_s``; return the wait.

    A thread counts as busy while the others use more than ``busy_fraction``
    of one core over a poll interval. Where per-thread CPU time cannot be read
    (not Linux), sleeps a fixed 0.2 s, twice OpenBLAS's default spin.

    Args:
        quiet_s: How long the other threads must stay idle.
        max_s: Give up waiting after this long.
        poll_s: Interval between readings.
        busy_fraction: CPU share (of one core) above which a reading counts as busy.

    Returns:
        Seconds waited.

    Example:
        >>> 0.0 <= spin_down(quiet_s=0.004, max_s=0.05) <= 1.0
        True
    """
    start = time.perf_counter()
    last = other_threads_cpu_s()
    if last is None:
        time.sleep(0.2)
        return time.perf_counter() - start
    quiet_since = start
    while True:
        time.sleep(poll_s)
        now = time.perf_counter()
        used = other_threads_cpu_s()
        if used is None:
            return now - start
        if used - last > busy_fraction * poll_s:
            quiet_since = now
        last = used
        if now - quiet_since >= quiet_s or now - start >= max_s:
            return now - start


class SpinDown:
    """``settle`` for :func:`~gpudense.benchmark.timing.run_rounds`: :func:`spin_down` before each block.

    Attributes:
        waits: Seconds waited before each block.
    """

    def __init__(self, *, quiet_s: float = 0.02, max_s: float = 1.0) -> None:
        self.quiet_s, self.max_s = quiet_s, max_s
        self.waits: list[float] = []

    def __call__(self) -> float:
        waited = spin_down(quiet_s=self.quiet_s, max_s=self.max_s)
        self.waits.append(waited)
        return waited

    def summary(self) -> dict[str, Any]:
        """``{"quiet_s", "max_s", "blocks", "waits_s": stats}`` for the JSON."""
        out: dict[str, Any] = {"quiet_s": self.quiet_s, "max_s": self.max_s, "blocks": len(self.waits)}
        if self.waits:
            out["waits_s"] = summarize(self.waits)
        return out


def torch_facts() -> dict[str, Any]:
    """What torch computes with on the CPU: version, BLAS library and version, CPU code path, threads.

    Returns:
        ``{"version", "blas", "blas_version", "cpu_capability", "threads",
        "interop_threads", "parallel", "mkl", "mkldnn", "openmp"}`` from
        ``torch.__config__`` and ``torch.backends``; ``{"version": "not
        importable (...)"}`` without torch.

    Example:
        >>> "version" in torch_facts()
        True
    """
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        return {"version": f"not importable ({type(exc).__name__})"}
    config = torch.__config__.show()
    parallel = torch.__config__.parallel_info()

    def find(pattern: str, text: str) -> str | None:
        m = re.search(pattern, text)
        return m.group(1).strip() if m else None

    facts: dict[str, Any] = {
        "version": torch.__version__,
        "blas": find(r"BLAS_INFO=([^,\s]+)", config),
        "blas_version": find(r"(Intel\(R\) (?:oneAPI )?Math Kernel Library Version [^\n]+)", config)
        or find(r"(OpenBLAS[^\n]*)", config),
        "cpu_capability": find(r"CPU capability usage: ([^\n]+)", config),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "parallel": find(r"ATen parallel backend: ([^\n]+)", parallel),
        "openmp": find(r"(OpenMP [^\n]+)", config),
        "mkl": bool(torch.backends.mkl.is_available()),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }
    cpu = getattr(torch.backends, "cpu", None)
    if cpu is not None and hasattr(cpu, "get_cpu_capability"):
        facts["cpu_capability"] = cpu.get_cpu_capability()
    return facts
