"""Launching the kernels of ``kernels/*.cu``: layouts, workspaces and argument lists.

Three launches, each on CuPy's current stream:

* :func:`launch_bias_grad`: ``db = dy.sum(0)`` in two passes (one when the
  plan says the batch is small in bytes);
* :func:`launch_act_bias_grad`: ``dz = dy * act'(.)`` and ``db = dz.sum(0)``,
  pass 1 fused with the activation's derivative, then the same pass 2;
* :func:`launch_bias_act`: ``y = act(z + b)`` after the forward product.

Per call the host work is small: the plan and its kernel arguments (NumPy
scalars, built once per plan and remembered with it by
:func:`~gpudense.backends.cuda.plan.cached_plan`), the output arrays and, only
when the batch is split, the pass-1 workspace, ``(n_chunks, m)`` in the
accumulator type from CuPy's memory pool. CuPy's pool ties a freed block to
the stream it was allocated on, so a workspace released after the launches
on the current stream is reused only by later work on that stream: this is
stream-safe without any synchronisation.

Nothing here imports CuPy: the functions receive the CuPy module (``cp``)
and the compiled kernels (:class:`~gpudense.backends.cuda.loader.DeviceKernels`).
The tests drive them with a stand-in for the few CuPy calls they make.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from gpudense.backends.cuda.loader import SUFFIX, DeviceKernels
from gpudense.backends.cuda.plan import BLOCK, VECTOR_BYTES, BiasGradPlan, accumulator_dtype, cached_plan

_I32 = (np.int32(0), np.int32(1))


def _suffix(dtype: Any) -> str:
    name = np.dtype(dtype).name
    if name not in SUFFIX:
        raise TypeError(f"the kernels take float16, bfloat16, float32 or float64; got {name}")
    return SUFFIX[name]


def kernel_layout(cp: Any, dy: Any) -> tuple[Any, int]:
    """``(dy, ld)`` with unit-stride rows; copies only when the kernel cannot read ``dy`` as it is."""
    item = dy.itemsize
    batch, m = dy.shape
    s0, s1 = dy.strides
    usable = dy.data.ptr % item == 0 and s0 % item == 0 and (m <= 1 or s1 == item)
    if not usable:
        dy = cp.ascontiguousarray(dy)
        s0 = dy.strides[0]
    ld = s0 // item if batch > 1 else m
    return dy, ld


def _aligned_rows(cp: Any, a: Any) -> Any:
    """``a`` C-contiguous at a 16-byte boundary (a copy only where it is not)."""
    if a.flags.c_contiguous and a.data.ptr % VECTOR_BYTES == 0:
        return a
    return a.copy()  # CuPy's pool hands out 512-byte aligned blocks


def _check_out(out: Any, m: int, dtype: np.dtype) -> None:
    if out.shape != (m,) or np.dtype(out.dtype) != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous array of shape ({m},) and dtype {dtype}; got shape "
            f"{tuple(out.shape)}, dtype {out.dtype}, c_contiguous={out.flags.c_contiguous}"
        )


def _run(cp: Any, k: DeviceKernels, pass1: str, plan: BiasGradPlan, head: tuple[Any, ...], out: Any,
         accumulate: bool) -> None:
    """Pass 1 (``head`` its leading arguments), then pass 2 unless pass 1 wrote ``db`` itself."""
    acc = _I32[bool(accumulate)]
    if plan.final_in_pass1:  # no workspace: a null pointer in its place (the kernel does not touch it)
        k.functions[pass1](plan.grid1, plan.block1, (*head, *plan.pass1_scalars, None, out, plan.final_flag, acc))
        return
    ws = cp.empty(plan.workspace_shape, accumulator_dtype(out.dtype))
    k.functions[pass1](plan.grid1, plan.block1, (*head, *plan.pass1_scalars, ws, out, plan.final_flag, acc))
    k.functions["bias_grad_pass2_" + pass1.rsplit("_", 1)[1]](
        plan.grid2, plan.block2, (ws, *plan.pass2_scalars, out, acc))


def launch_bias_grad(cp: Any, k: DeviceKernels, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
    """Column sums of ``dy`` (batch, m) into ``out`` (new when None); see ``CupyBackend.bias_grad``."""
    dtype = np.dtype(dy.dtype)
    suffix = _suffix(dtype)
    if dy.ndim != 2:
        raise ValueError(f"bias_grad needs a 2-D dy (batch, m); got shape {tuple(dy.shape)}")
    batch, m = (int(s) for s in dy.shape)
    if out is None:
        if accumulate:
            raise ValueError("bias_grad(accumulate=True) needs out")
        out = cp.empty(m, dtype)
    else:
        _check_out(out, m, dtype)
    if m == 0:
        return out
    dy, ld = kernel_layout(cp, dy)
    name = "bias_grad_pass1_" + suffix
    plan = cached_plan(batch, m, dtype.itemsize, ld, dy.data.ptr % VECTOR_BYTES, k.n_sm, k.blocks_per_sm[name])
    _run(cp, k, name, plan, (dy,), out, accumulate)
    return out


def launch_act_bias_grad(cp: Any, k: DeviceKernels, dy: Any, saved: Any, activation: str, out: Any = None, *,
                         accumulate: bool = False, bias: bool = True) -> tuple[Any, Any]:
    """``dz = dy * act'(saved)`` and ``db = dz.sum(0)`` in one fused pass (plus pass 2 when split).

    ``dy`` and ``saved`` are read where they lie when C-contiguous at a
    16-byte boundary (else copied once), so that ``dy``, ``saved`` and the new
    ``dz`` share one layout. Without ``bias``, ``db`` goes to a scratch array
    and None is returned for it.
    """
    dtype = np.dtype(dy.dtype)
    suffix = _suffix(dtype)
    batch, m = (int(s) for s in dy.shape)
    if out is None:
        if accumulate and bias:
            raise ValueError("act_bias_grad(accumulate=True) needs out")
        out = cp.empty(m, dtype)
    elif bias:
        _check_out(out, m, dtype)
    else:
        out = cp.empty(m, dtype)
    dy, saved = _aligned_rows(cp, dy), _aligned_rows(cp, saved)
    dz = cp.empty((batch, m), dtype)
    if m == 0:
        return dz, out if bias else None
    name = f"act_bias_grad_{activation}_{suffix}"
    plan = cached_plan(batch, m, dtype.itemsize, m, 0, k.n_sm, k.blocks_per_sm[name])
    _run(cp, k, name, plan, (dy, saved, dz), out, accumulate and bias)
    return dz, out if bias else None


@functools.lru_cache(maxsize=256)
def _bias_act_args(n: int, m: int, vec: int, has_bias: bool, write_z: bool, n_sm: int,
                   bps: int) -> tuple[tuple[int, int, int], tuple[np.number, ...]]:
    """The forward kernel's grid (a grid-stride loop over at most 4 waves) and size arguments."""
    work = n // vec if vec > 1 else n
    grid = (max(1, min(-(-work // BLOCK), 4 * n_sm * bps)), 1, 1)
    return grid, (np.int64(n), np.int64(m), _I32[has_bias], _I32[vec > 1], _I32[write_z])


def launch_bias_act(cp: Any, k: DeviceKernels, z: Any, b: Any, activation: str) -> tuple[Any, Any]:
    """``y = act(z + b)`` over the 2-D product ``z`` (batch, m), which is reused.

    relu and tanh write ``y`` over ``z`` (``saved`` is ``y``); gelu writes
    ``z + b`` back into ``z`` (``saved``) and ``y`` into a new array.
    """
    dtype = np.dtype(z.dtype)
    suffix = _suffix(dtype)
    batch, m = (int(s) for s in z.shape)
    z = _aligned_rows(cp, z)
    gelu = activation == "gelu"
    y = cp.empty((batch, m), dtype) if gelu else z
    n = batch * m
    if n == 0:
        return y, z
    if b is not None:
        b = _aligned_rows(cp, b)
    # 16-byte groups when rows are whole groups (z, y and b start at 16-byte boundaries).
    vec = 1 if (m * dtype.itemsize) % VECTOR_BYTES else VECTOR_BYTES // dtype.itemsize
    name = f"bias_act_{activation}_{suffix}"
    grid, scalars = _bias_act_args(n, m, vec, b is not None, gelu, k.n_sm, k.blocks_per_sm[name])
    k.functions[name](grid, (BLOCK, 1, 1), (z, z if b is None else b, y, *scalars))
    return y, z
