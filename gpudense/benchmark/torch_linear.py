"""The PyTorch contender of a sweep: ``torch.nn.Linear`` forward+backward on the sweep's own arrays.

torch is optional (in no extra); everything here imports it when called.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def torch_importable() -> bool:
    """Whether ``import torch`` works here (a broken install counts as not)."""
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


#: A 16-bit dtype whose torch CPU product takes more than this many times its float32 time is not
#: timed against torch: without a native 16-bit GEMM (AVX2 CPUs) torch falls back to a loop that
#: would turn one sweep into hours, and its time says nothing about the layer.
TORCH_SLOW_RATIO = 8.0


def torch_cpu_slowdown(dtype_name: str, threads: int | None, n: int = 256) -> float:
    """How many times longer torch's CPU ``n``-cubed product takes in ``dtype_name`` than in float32.

    Each dtype is called once to warm up, then timed as the best of three
    calls, on ``threads`` threads (torch's default when None).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    best = {}
    for name in ("float32", dtype_name):
        a = torch.ones((n, n), dtype=getattr(torch, name))
        a @ a
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    return best[dtype_name] / max(best["float32"], 1e-9)


class TorchLinear:
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
        bf16 = a.dtype.name == "bfloat16"  # torch knows no ml_dtypes: hand over the bits
        if bf16:
            a = a.view(np.uint16)
        if self.device == "cpu":
            t = torch.from_numpy(np.ascontiguousarray(a))
        else:
            t = torch.as_tensor(a, device="cuda")  # __cuda_array_interface__, no copy
        return t.view(torch.bfloat16) if bf16 else t

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
