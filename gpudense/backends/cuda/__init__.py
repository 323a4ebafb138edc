"""The CUDA backend: CuPy arrays, cuBLAS products and the bias-gradient RawKernel.

One module per idea:

* :mod:`~gpudense.backends.cuda.plan`: the kernel's launch plan (grid,
  block, chunks, workspace) and the constants it shares with the kernel;
  pure Python.
* :mod:`~gpudense.backends.cuda.launch`: the launches (layouts, workspaces,
  argument lists built once per plan).
* :mod:`~gpudense.backends.cuda.loader`: the kernel files and their source
  (:func:`module_code`), their compiler options (:func:`kernel_defines`)
  and the NVRTC modules, built once per process and device.
* :mod:`~gpudense.backends.cuda.optim_kernels`: the optimizer steps as
  ``ElementwiseKernel`` objects.
* :mod:`~gpudense.backends.cuda.backend`: :class:`CupyBackend` (the launch
  glue), the CuPy availability check and :func:`library_facts`.
* :mod:`~gpudense.backends.cuda.nccl_engine`: the CuPy side of multi-GPU
  training (the rank's device, NCCL through ``cupy.cuda.nccl``).

The registry imports this package only when asked for (``get_backend("cupy")``
or ``"auto"``). Importing it imports no CuPy, so the plan and the loader can
be used and tested on a machine without CuPy or a GPU.
"""

from gpudense.backends.cuda.backend import CupyBackend, library_facts
from gpudense.backends.cuda.loader import (
    ENTRY_POINTS,
    KERNEL_FILES,
    NVRTC_OPTIONS,
    KernelBuildError,
    kernel_defines,
    kernel_source,
    module_code,
)
from gpudense.backends.cuda.plan import (
    BLOCK,
    MAX_GRID_Y,
    MIN_ROWS_PER_THREAD,
    SINGLE_PASS_BLOCK_BYTES,
    SINGLE_PASS_ROWS_PER_THREAD,
    UNROLL,
    VECTOR_BYTES,
    BiasGradPlan,
    bias_grad_plan,
    blocks_per_sm,
    worst_case_tiles,
)

__all__ = [
    "BLOCK",
    "ENTRY_POINTS",
    "KERNEL_FILES",
    "MAX_GRID_Y",
    "MIN_ROWS_PER_THREAD",
    "NVRTC_OPTIONS",
    "SINGLE_PASS_BLOCK_BYTES",
    "SINGLE_PASS_ROWS_PER_THREAD",
    "UNROLL",
    "VECTOR_BYTES",
    "BiasGradPlan",
    "CupyBackend",
    "KernelBuildError",
    "bias_grad_plan",
    "blocks_per_sm",
    "kernel_defines",
    "kernel_source",
    "module_code",
    "library_facts",
    "worst_case_tiles",
]
