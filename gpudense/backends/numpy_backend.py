"""The NumPy (CPU) backend."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from gpudense.backends.base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def bias_grad(self, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        # float16 is summed in float32, as the CUDA kernel does, then rounded once.
        acc = np.float32 if dy.dtype == np.float16 else dy.dtype
        db = dy.sum(axis=0, dtype=acc)
        if out is None:
            return db.astype(dy.dtype, copy=False)
        if accumulate:
            if acc != dy.dtype:
                db += out  # add in the wide type, round once
                out[...] = db
            else:
                out += db
        else:
            out[...] = db
        return out

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        module = type(a).__module__ or ""
        if module == "cupy" or module.startswith("cupy."):
            a = a.get()
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> Any:
        return self.asarray(a)

    def describe(self) -> dict[str, str]:
        return {"numpy": np.__version__, "cpu": cpu_model()}


def cpu_model() -> str:
    """The CPU's model name and logical core count, e.g. ``"AMD EPYC 9654 (2 cores)"``."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
