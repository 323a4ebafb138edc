"""The machine and package facts of a GPU run, as one JSON file (the first stage of bench/gpu_validation.sh).

    PYTHONPATH=$PWD python3 bench/gpu_facts.py --out environment.json

Writes the date (UTC), the checkout's commit, the host (Python, platform,
CPU count), ``nvidia-smi``'s view of the GPUs (name, driver, memory, clocks),
CUDA as CuPy sees it (runtime, driver, NVRTC; the device's name, compute
capability, SMs, L2, memory) and the versions of the packages the run uses
(gpudense, NumPy, CuPy, torch with its CUDA and cuDNN, ml_dtypes, mpi4py,
pytest, nvmath-python). Every fact that cannot be read is written as
``"unavailable: <why>"``, so the file is written on any machine, a GPU or
not; the exit status is 0 whenever the file was written. The file is
written twice: first without torch and nvmath-python (whose imports take
seconds on a cold machine), then with them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
#: Packages whose versions are recorded (import name, as the JSON names it).
PACKAGES = ("numpy", "cupy", "torch", "ml_dtypes", "mpi4py", "pytest", "nvmath")
SMI_FIELDS = "name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,pstate,power.limit"


def attempt(read: Callable[[], Any]) -> Any:
    """``read()``, or ``"unavailable: <error>"`` (one line) where it raises.

    Example:
        >>> attempt(lambda: 1 + 1), attempt(lambda: 1 / 0)
        (2, 'unavailable: ZeroDivisionError: division by zero')
    """
    try:
        return read()
    except Exception as exc:  # a fact that cannot be read is recorded as such
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"unavailable: {type(exc).__name__}: {text}".rstrip(": ")


def package_version(name: str) -> str:
    """The version of the package imported as ``name``, or ``"not installed"``.

    Example:
        >>> package_version("json_no_such_package")
        'not installed'
    """
    try:
        module = importlib.import_module(name)
    except ImportError:
        return "not installed"
    return str(getattr(module, "__version__", "unknown"))


def git_commit() -> str:
    """HEAD's hash, with ``+dirty`` when tracked files differ from it, or ``"unknown"``."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def nvidia_smi() -> list[dict[str, str]] | str:
    """One dict per GPU from ``nvidia-smi --query-gpu``, or why there is none."""
    done = subprocess.run(["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        return f"unavailable: nvidia-smi exit status {done.returncode}: {done.stderr.strip()[:200]}"
    keys = SMI_FIELDS.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in done.stdout.splitlines()
            if line.strip()]


def cuda_facts() -> dict[str, Any]:
    """CUDA as CuPy sees it: versions, and device 0's properties."""
    import cupy

    rt = cupy.cuda.runtime
    facts: dict[str, Any] = {
        "runtime": rt.runtimeGetVersion(),
        "driver": rt.driverGetVersion(),
        "nvrtc": attempt(lambda: ".".join(map(str, cupy.cuda.nvrtc.getVersion()))),
        "device_count": attempt(rt.getDeviceCount),
    }
    props = rt.getDeviceProperties(0)
    name = props["name"]
    facts["device0"] = {
        "name": name.decode() if isinstance(name, bytes) else name,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "multiprocessors": props["multiProcessorCount"],
        "l2_bytes": props["l2CacheSize"],
        "memory_bytes": props["totalGlobalMem"],
        "memory_clock_khz": props.get("memoryClockRate"),
        "memory_bus_bits": props.get("memoryBusWidth"),
        "regs_per_multiprocessor": props.get("regsPerMultiprocessor"),
        "shared_per_multiprocessor": props.get("sharedMemPerMultiprocessor"),
    }
    return facts


def torch_facts() -> dict[str, Any]:
    """torch's version and the CUDA and cuDNN it was built with, and whether it sees a GPU."""
    import torch

    return {"version": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": attempt(torch.backends.cudnn.version), "cuda_available": torch.cuda.is_available()}


def collect(*, slow: bool = True) -> dict[str, Any]:
    """Every fact of the module's description, as a JSON-ready dict.

    Args:
        slow: Also import torch and nvmath-python (seconds on a cold machine);
            without, their entries say ``"not read yet"``.

    Example:
        >>> facts = collect(slow=False)
        >>> sorted(facts)[:3], facts["packages"]["numpy"] != "not installed", facts["torch"]
        (['commit', 'cpu_count', 'cuda'], True, 'not read yet')
    """
    later = ("torch", "nvmath")

    def version(name: str) -> Any:
        return attempt(lambda: package_version(name)) if slow or name not in later else "not read yet"

    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "nvidia_smi": attempt(nvidia_smi),
        "cuda": attempt(cuda_facts),
        "packages": {"gpudense": version("gpudense"), **{name: version(name) for name in PACKAGES}},
        "torch": attempt(torch_facts) if slow else "not read yet",
        "env": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "CUPY_TF32", "CUDA_PATH")
                if k in os.environ},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for slow in (False, True):  # the quick facts first: a stop while torch imports keeps them
        facts = collect(slow=slow)
        Path(args.out).write_text(json.dumps(facts, indent=2, default=str) + "\n", encoding="utf-8")
    cuda = facts["cuda"]
    device = cuda["device0"]["name"] if isinstance(cuda, dict) else cuda
    print(f"facts: {args.out}: commit {facts['commit'][:12]}, device {device}, "
          + ", ".join(f"{k} {v}" for k, v in facts["packages"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
