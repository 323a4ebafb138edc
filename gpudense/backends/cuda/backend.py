"""The CuPy (CUDA) backend.

Imported only when asked for: ``get_backend("cupy")`` or ``"auto"``. The
module itself imports no CuPy at import time, so its pure-Python parts (the
bias-gradient launch plan, its NumPy emulation and the kernel-source loader)
can be used and tested on a machine without CuPy or a GPU.

Matrix products go through CuPy (cuBLAS) on the current stream. The bias
gradient ``db = dy.sum(0)`` goes through the two-pass RawKernel in
``kernels/bias_grad.cu``; the launch plan (grid, block, chunk size, workspace)
is :func:`bias_grad_plan`, and :func:`emulate_bias_grad` is a NumPy model of
the exact order in which the kernel adds, so the CPU can check the plan and a
GPU test can compare the kernel bit for bit.

Workspace: the pass-1 partial sums, ``(n_chunks, m)`` in the accumulator type,
are allocated from CuPy's memory pool on every call (no cache of our own).
CuPy's pool ties a freed block to the stream it was allocated on, so a
workspace released after the launches on the current stream is reused only by
later work on that stream: this is stream-safe without any synchronisation.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

import numpy as np

from gpudense import _nvtx
from gpudense.backends import BackendUnavailableError
from gpudense.backends.base import Backend

__all__ = [
    "BiasGradPlan",
    "CupyBackend",
    "KernelBuildError",
    "bias_grad_plan",
    "blocks_per_sm",
    "emulate_bias_grad",
    "kernel_source",
]

#: Threads per block of both bias-gradient passes (``GPUDENSE_BLOCK`` in the .cu file).
BLOCK = 256
#: Rows each pass-1 thread loads before its first add (``GPUDENSE_UNROLL``).
UNROLL = 4
#: Fewest rows a pass-1 thread adds (chunks are a multiple of this times block.y).
MIN_ROWS_PER_THREAD = 2
#: A batch of at most this many rows per pass-1 thread is summed in one chunk (one launch).
SINGLE_PASS_ROWS_PER_THREAD = 8
#: Bytes per vector load.
VECTOR_BYTES = 16
#: Largest grid.y the CUDA launch accepts.
MAX_GRID_Y = 65535
#: The kernel file and its entry points, per dtype.
KERNEL_FILE = "bias_grad.cu"
_SUFFIX = {np.dtype(np.float64): "f64", np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}
_ACC = {np.dtype(np.float64): np.dtype(np.float64), np.dtype(np.float32): np.dtype(np.float32),
        np.dtype(np.float16): np.dtype(np.float32)}
ENTRY_POINTS = tuple(f"bias_grad_pass{p}_{s}" for p in (1, 2) for s in ("f64", "f32", "f16"))
#: NVRTC options for the kernel module (line info costs nothing at run time
#: and lets Nsight Compute show source lines).
NVRTC_OPTIONS = ("--generate-line-info",)


#: The repository root of a plain checkout (``gpudense/backends/cuda/`` is three levels down).
_REPO_ROOT = Path(__file__).resolve().parents[3]


class KernelBuildError(RuntimeError):
    """A kernel file could not be found or compiled; ``log`` holds the compiler's output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


# --------------------------------------------------------------------------
# Kernel source
# --------------------------------------------------------------------------


def kernel_source(name: str = KERNEL_FILE) -> tuple[str, str]:
    """The text of kernel file ``name`` and the path it was read from.

    An installed gpudense ships its kernels as the package ``gpudense.kernels``
    and they are found through :mod:`importlib.resources`. From a plain
    checkout (``PYTHONPATH`` at the repository root, nothing installed) that
    package does not exist, and the file is read from ``<repo>/kernels/``
    next to the ``gpudense`` package.

    Args:
        name: File name inside the kernels directory, e.g. ``"bias_grad.cu"``.

    Returns:
        ``(source, path)``: the file's text and where it came from.

    Raises:
        KernelBuildError: the file is in neither place.

    Example:
        >>> src, path = kernel_source("bias_grad.cu")
        >>> "bias_grad_pass1_f32" in src
        True
    """
    tried = []
    try:
        resource = importlib.resources.files("gpudense.kernels").joinpath(name)
    except ModuleNotFoundError:
        resource = None
    if resource is not None:
        tried.append(str(resource))
        if resource.is_file():
            return resource.read_text(encoding="utf-8"), str(resource)
    path = _REPO_ROOT / "kernels" / name
    tried.append(str(path))
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    raise KernelBuildError(f"kernel source {name!r} not found; looked in: {', '.join(tried)}")


def _with_line_directive(source: str, path: str) -> str:
    quoted = Path(path).as_posix().replace("\\", "\\\\").replace('"', '\\"')
    return f'#line 1 "{quoted}"\n{source}'


# --------------------------------------------------------------------------
# Launch plan (pure Python) and its NumPy emulation
# --------------------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class BiasGradPlan:
    """How the bias-gradient kernel covers a ``(batch, m)`` array; see :func:`bias_grad_plan`."""

    batch: int
    m: int
    itemsize: int
    vec: int  #: columns per pass-1 thread (16 bytes of elements)
    vec_path: bool  #: 16-byte loads (row pitch a multiple of 16 bytes)
    head: int  #: elements from the 16-byte boundary before column 0 to column 0 (vector path)
    tx: int  #: pass-1 block.x (threads across columns)
    ty: int  #: pass-1 block.y (threads down the batch)
    tiles: int  #: pass-1 grid.x (column tiles of tx * vec columns)
    chunk_rows: int  #: rows per batch chunk
    n_chunks: int  #: pass-1 grid.y
    tx2: int  #: pass-2 block.x
    ty2: int  #: pass-2 block.y
    tiles2: int  #: pass-2 grid.x

    @property
    def final_in_pass1(self) -> bool:
        """One chunk: pass 1 writes ``db`` itself and pass 2 is not launched."""
        return self.n_chunks == 1

    @property
    def workspace_shape(self) -> tuple[int, int]:
        """Shape of the partial-sum workspace (accumulator dtype); ``(0, m)`` when not needed."""
        return (0 if self.final_in_pass1 else self.n_chunks, self.m)

    @property
    def grid1(self) -> tuple[int, int, int]:
        return (self.tiles, self.n_chunks, 1)

    @property
    def block1(self) -> tuple[int, int, int]:
        return (self.tx, self.ty, 1)

    @property
    def grid2(self) -> tuple[int, int, int]:
        return (self.tiles2, 1, 1)

    @property
    def block2(self) -> tuple[int, int, int]:
        return (self.tx2, self.ty2, 1)


def blocks_per_sm(num_regs: int, *, regs_per_sm: int, threads_per_sm: int, block: int = BLOCK) -> int:
    """Resident 256-thread blocks per SM for a kernel using ``num_regs`` registers per thread.

    Registers are allocated per warp in units of 256 (8 per thread); the
    result is between 1 and ``threads_per_sm // block``.

    Example:
        >>> blocks_per_sm(64, regs_per_sm=65536, threads_per_sm=2048)
        4
    """
    per_thread = max(8, _ceil_div(int(num_regs), 8) * 8)
    by_regs = int(regs_per_sm) // (per_thread * block)
    by_threads = int(threads_per_sm) // block
    return max(1, min(by_regs, by_threads))


def bias_grad_plan(
    batch: int,
    m: int,
    *,
    itemsize: int,
    ld: int,
    ptr: int,
    n_sm: int,
    blocks_per_sm: int = 4,
) -> BiasGradPlan:
    """The launch plan of the bias-gradient kernel for a ``(batch, m)`` array.

    Pure Python, so it is tested on the CPU. Each pass-1 thread owns
    ``vec = 16 // itemsize`` columns; ``tx`` threads across (a power of two,
    at most 32, enough for ``ceil(m / vec)`` column groups) and ``ty = 256 //
    tx`` threads down the batch. The grid is ``(tiles, n_chunks)``; the
    number of chunks is the largest that keeps ``tiles * n_chunks`` within
    ``n_sm * blocks_per_sm`` (one wave of resident blocks: the whole device
    busy and no straggling partial wave, whether ``dy`` is tall and narrow,
    short and wide or square), with at least ``MIN_ROWS_PER_THREAD`` rows
    per thread; a batch of at most ``SINGLE_PASS_ROWS_PER_THREAD * ty`` rows
    is one chunk, summed in a single launch. Pass 2 reduces the ``n_chunks`` partial sums of each column with
    ``(tx2, ty2)`` blocks, ``tx2`` a power of two up to 32 columns.

    The summation order of a column depends on ``ty``, ``chunk_rows``,
    ``n_chunks`` and ``ty2`` only, which are functions of ``(batch, m,
    itemsize, n_sm, blocks_per_sm)``: not of the address or row pitch, which
    only choose between 16-byte and element loads and shift the tiles by
    ``head`` columns. The same values give bitwise the same ``db`` whether
    ``dy`` is contiguous, strided or misaligned.

    Args:
        batch: Rows of ``dy`` (may be 0).
        m: Columns of ``dy`` (at least 1).
        itemsize: Bytes per element: 8, 4 or 2.
        ld: Row pitch in elements (``dy.strides[0] // itemsize``; any sign).
        ptr: Address of ``dy[0, 0]``, a multiple of ``itemsize``.
        n_sm: Streaming multiprocessors on the device.
        blocks_per_sm: Resident pass-1 blocks per SM (see :func:`blocks_per_sm`).

    Returns:
        A :class:`BiasGradPlan`.

    Raises:
        ValueError: a size or the address is out of range.

    Example:
        >>> p = bias_grad_plan(1048576, 64, itemsize=4, ld=64, ptr=0, n_sm=132)
        >>> p.grid1[0] * p.grid1[1] >= 132, p.vec_path
        (True, True)
    """
    batch, m, itemsize, ld, ptr = int(batch), int(m), int(itemsize), int(ld), int(ptr)
    if batch < 0 or m < 1:
        raise ValueError(f"bias_grad_plan needs batch >= 0 and m >= 1; got batch={batch}, m={m}")
    if itemsize not in (2, 4, 8):
        raise ValueError(f"itemsize must be 2, 4 or 8; got {itemsize}")
    if ptr % itemsize:
        raise ValueError(f"ptr {ptr:#x} is not a multiple of the itemsize {itemsize}")
    if n_sm < 1 or blocks_per_sm < 1:
        raise ValueError(f"n_sm and blocks_per_sm must be >= 1; got {n_sm}, {blocks_per_sm}")
    vec = VECTOR_BYTES // itemsize
    # The order-defining part: from the shape, dtype and device only.
    groups = _ceil_div(m, vec)
    tx = min(32, _pow2_ceil(groups))
    ty = BLOCK // tx
    nominal_tiles = _ceil_div(groups, tx)
    rows_step = ty * MIN_ROWS_PER_THREAD
    # One wave: tiles * n_chunks <= the resident-block slots (a second, partial
    # wave of a few blocks would run on a few SMs only and could add a third
    # to the time), as many chunks as fit otherwise.
    want_chunks = max(1, (n_sm * blocks_per_sm) // nominal_tiles)
    if batch <= ty * SINGLE_PASS_ROWS_PER_THREAD:
        want_chunks = 1  # tiny batch: one launch beats splitting it over more blocks
    chunk_rows = max(rows_step, _ceil_div(_ceil_div(batch, want_chunks), rows_step) * rows_step)
    n_chunks = max(1, _ceil_div(batch, chunk_rows))
    if n_chunks > MAX_GRID_Y:
        chunk_rows = _ceil_div(_ceil_div(batch, MAX_GRID_Y), rows_step) * rows_step
        n_chunks = _ceil_div(batch, chunk_rows)
    # Pass 2: down to 8 columns (32-byte rows) per block while that gives more
    # blocks than SMs, so that a narrow db with many chunks is read by many threads.
    tx2 = min(32, _pow2_ceil(m))
    while tx2 > 8 and _ceil_div(m, tx2) < n_sm:
        tx2 //= 2
    ty2 = BLOCK // tx2
    tiles2 = _ceil_div(m, tx2)
    # The address-dependent part: which loads, and where the tiles start.
    vec_path = batch <= 1 or (ld * itemsize) % VECTOR_BYTES == 0
    head = (ptr % VECTOR_BYTES) // itemsize if vec_path else 0
    tiles = _ceil_div(m + head, tx * vec)
    return BiasGradPlan(
        batch=batch, m=m, itemsize=itemsize, vec=vec, vec_path=vec_path, head=head,
        tx=tx, ty=ty, tiles=tiles, chunk_rows=chunk_rows, n_chunks=n_chunks,
        tx2=tx2, ty2=ty2, tiles2=tiles2,
    )


def _tree(parts: np.ndarray) -> np.ndarray:
    """The kernels' fixed tree over axis 0 (a power of two): rows [0, s) += rows [s, 2s)."""
    parts = parts.copy()
    s = parts.shape[0] // 2
    while s > 0:
        parts[:s] = parts[:s] + parts[s : 2 * s]
        s //= 2
    return parts[0]


def emulate_bias_grad(dy: np.ndarray, plan: BiasGradPlan, out: np.ndarray | None = None, *,
                      accumulate: bool = False) -> np.ndarray:
    """The bias-gradient kernel's result, computed on the host in the kernel's order.

    Every addition the kernel performs on a column is performed here in the
    same order and the same floating type (float64 for float64, float32 for
    float32 and float16), so, IEEE addition being exactly rounded, the result
    equals the device's bit for bit (NaN payloads aside). Rows past the end of
    a chunk are padded with ``+0.0``, which leaves every sum unchanged (the
    accumulators start at ``+0.0`` and can never become ``-0.0``).

    Args:
        dy: Host array ``(plan.batch, plan.m)``, float16/32/64.
        plan: The plan the kernel was (or would be) launched with.
        out: With ``accumulate``, the old ``db`` (it is not modified).
        accumulate: Return ``out + sum`` (rounded once) instead of the sum.

    Returns:
        ``db``, shape ``(m,)``, dtype of ``dy``.
    """
    dy = np.asarray(dy)
    dtype = np.dtype(dy.dtype)
    acc_t = _ACC[dtype]
    batch, m = plan.batch, plan.m
    if dy.shape != (batch, m):
        raise ValueError(f"dy has shape {dy.shape}; the plan is for {(batch, m)}")
    rows_per_thread = plan.chunk_rows // plan.ty
    padded = np.zeros((plan.n_chunks * plan.chunk_rows, m), acc_t)
    padded[:batch] = dy.astype(acc_t)
    # row = chunk * chunk_rows + k * ty + t: thread t of chunk c adds k = 0, 1, ... in order.
    blocks = padded.reshape(plan.n_chunks, rows_per_thread, plan.ty, m)
    acc = np.zeros((plan.n_chunks, plan.ty, m), acc_t)
    for k in range(rows_per_thread):
        acc += blocks[:, k]
    partial = np.stack([_tree(acc[c]) for c in range(plan.n_chunks)])  # (n_chunks, m)
    if plan.final_in_pass1:
        s = partial[0]
    else:
        k2 = _ceil_div(plan.n_chunks, plan.ty2)
        ws = np.zeros((k2 * plan.ty2, m), acc_t)
        ws[: plan.n_chunks] = partial
        ws = ws.reshape(k2, plan.ty2, m)
        acc2 = np.zeros((plan.ty2, m), acc_t)
        for k in range(k2):
            acc2 += ws[k]
        s = _tree(acc2)
    if accumulate:
        if out is None:
            raise ValueError("accumulate=True needs out")
        s = np.asarray(out).astype(acc_t) + s
    return s.astype(dtype)


@functools.lru_cache(maxsize=512)
def _cached_plan(batch: int, m: int, itemsize: int, ld: int, ptr16: int, n_sm: int, bps: int) -> BiasGradPlan:
    return bias_grad_plan(batch, m, itemsize=itemsize, ld=ld, ptr=ptr16, n_sm=n_sm, blocks_per_sm=bps)


# --------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------


def _unavailable(message: str, *, cupy_installed: bool) -> BackendUnavailableError:
    exc = BackendUnavailableError(message)
    exc.cupy_installed = cupy_installed  # type: ignore[attr-defined]
    return exc


def _import_cupy() -> Any:
    """Import CuPy and check that a CUDA device is usable; raise with the cause."""
    try:
        import cupy
    except ImportError as exc:
        raise _unavailable(
            f"CuPy is not installed ({exc}); install gpudense[cuda12] or gpudense[cuda13]",
            cupy_installed=False,
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing driver library, ...
        raise _unavailable(
            f"CuPy {cupy.__version__} is installed but no CUDA device is usable: {exc}",
            cupy_installed=True,
        ) from exc
    if count < 1:
        raise _unavailable(
            f"CuPy {cupy.__version__} is installed but the CUDA runtime reports no device",
            cupy_installed=True,
        )
    return cupy


class _DeviceKernels:
    """The compiled bias-gradient kernels and launch facts of one device."""

    def __init__(self, cp: Any, device_id: int) -> None:
        from cupy.cuda.compiler import CompileException

        source, path = kernel_source(KERNEL_FILE)
        self.path = path
        try:
            module = cp.RawModule(code=_with_line_directive(source, path), options=NVRTC_OPTIONS)
            self.functions = {name: module.get_function(name) for name in ENTRY_POINTS}
        except CompileException as exc:
            log = exc.get_message()
            raise KernelBuildError(
                f"compiling {path} for device {device_id} with NVRTC failed:\n{log}", log
            ) from exc
        attrs = cp.cuda.Device(device_id).attributes
        self.n_sm = int(attrs["MultiProcessorCount"])
        self.blocks_per_sm = {
            name: blocks_per_sm(
                fn.num_regs,
                regs_per_sm=int(attrs["MaxRegistersPerMultiprocessor"]),
                threads_per_sm=int(attrs["MaxThreadsPerMultiProcessor"]),
            )
            for name, fn in self.functions.items()
        }


class CupyBackend(Backend):
    """CuPy arrays on the current CUDA device; cuBLAS products and the bias-gradient RawKernel.

    Everything is issued on CuPy's current stream. The kernel module is built
    once per process and device, on the first bias gradient there.
    """

    name = "cupy"

    def __init__(self) -> None:
        self.xp = _import_cupy()
        # CuPy reads CUPY_TF32 once, at import; so do we (see matmul_acc).
        self._tf32 = os.environ.get("CUPY_TF32", "0").strip() not in ("", "0")
        self._kernels: dict[int, _DeviceKernels] = {}
        self._lock = threading.Lock()

    # -- kernels -----------------------------------------------------------

    def kernels(self, device_id: int | None = None) -> _DeviceKernels:
        """The compiled kernels of ``device_id`` (default: current device); built on first use.

        Raises:
            KernelBuildError: the source is missing or does not compile (the
                message carries NVRTC's log).
        """
        cp = self.xp
        if device_id is None:
            device_id = cp.cuda.runtime.getDevice()
        found = self._kernels.get(device_id)
        if found is not None:
            return found
        with self._lock:
            if device_id not in self._kernels:
                with cp.cuda.Device(device_id):
                    self._kernels[device_id] = _DeviceKernels(cp, device_id)
            return self._kernels[device_id]

    # -- the Backend interface ---------------------------------------------

    def matmul_acc(self, a: Any, b: Any, out: Any) -> Any:
        """``out += a @ b`` through cuBLAS; returns ``out``.

        For float32 and float64 this is one GEMM with ``beta = 1``
        (``cupy.cublas.gemm``): no temporary and no extra pass over ``out``.
        float16 (which ``cupy.cublas.gemm`` does not take) and sizes past
        cuBLAS's 32-bit limits use ``out += a @ b``, and so does float32
        under ``CUPY_TF32=1``: ``cupy.cublas.gemm`` always computes in full
        float32, while ``cupy.matmul`` follows ``CUPY_TF32``, and every
        product of one run must be computed alike.
        """
        cp = self.xp
        if a.shape[1] == 0:  # empty batch: nothing to add
            return out
        limit = 2**31 - 1
        if (
            (out.dtype == cp.float64 or (out.dtype == cp.float32 and not self._tf32))
            and a.dtype == out.dtype == b.dtype
            and max(a.shape + b.shape) <= limit
            and (out.flags.c_contiguous or out.flags.f_contiguous)
        ):
            import cupy.cublas

            return cupy.cublas.gemm("N", "N", a, b, out=out, alpha=1.0, beta=1.0)
        out += cp.matmul(a, b)
        return out

    def bias_grad(self, dy: Any, out: Any = None, *, accumulate: bool = False) -> Any:
        """Column sums of ``dy`` (batch, m) through the deterministic two-pass kernel.

        ``dy`` is used in place when its rows are unit-stride (any row pitch,
        any alignment to its itemsize); otherwise one contiguous copy is made.
        float16 is summed in float32 and rounded once, also when
        accumulating (``out = round(out + sum)``).

        Args:
            dy: CuPy array ``(batch, m)``, float16/32/64; ``batch`` may be 0.
            out: Optional C-contiguous ``(m,)`` array of ``dy``'s dtype.
            accumulate: ``out += sum`` instead of ``out = sum`` (needs ``out``).

        Returns:
            ``out``, or a new ``(m,)`` array.
        """
        cp = self.xp
        dtype = np.dtype(dy.dtype)
        if dtype not in _SUFFIX:
            raise TypeError(f"bias_grad needs float16, float32 or float64 dy; got {dy.dtype}")
        if dy.ndim != 2:
            raise ValueError(f"bias_grad needs a 2-D dy (batch, m); got shape {tuple(dy.shape)}")
        batch, m = (int(s) for s in dy.shape)
        with dy.device:
            if out is None:
                if accumulate:
                    raise ValueError("bias_grad(accumulate=True) needs out")
                out = cp.empty(m, dtype)
            elif out.shape != (m,) or np.dtype(out.dtype) != dtype or not out.flags.c_contiguous:
                raise ValueError(
                    f"out must be a C-contiguous array of shape ({m},) and dtype {dtype}; got shape "
                    f"{tuple(out.shape)}, dtype {out.dtype}, c_contiguous={out.flags.c_contiguous}"
                )
            if m == 0:
                return out
            dy, ld = self._kernel_layout(dy)
            k = self.kernels(dy.device.id)
            suffix = _SUFFIX[dtype]
            pass1 = k.functions[f"bias_grad_pass1_{suffix}"]
            plan = _cached_plan(batch, m, dtype.itemsize, ld, dy.data.ptr % VECTOR_BYTES, k.n_sm,
                                k.blocks_per_sm[f"bias_grad_pass1_{suffix}"])
            i64, i32 = np.int64, np.int32
            if plan.final_in_pass1:
                ws = out  # not read or written when final_pass = 1
            else:
                ws = cp.empty(plan.workspace_shape, _ACC[dtype])
            pass1(plan.grid1, plan.block1,
                  (dy, i64(batch), i64(m), i64(ld), i64(plan.chunk_rows), i32(plan.head),
                   i32(plan.vec_path), ws, out, i32(plan.final_in_pass1), i32(accumulate)))
            if not plan.final_in_pass1:
                pass2 = k.functions[f"bias_grad_pass2_{suffix}"]
                pass2(plan.grid2, plan.block2, (ws, i64(plan.n_chunks), i64(m), out, i32(accumulate)))
        return out

    def _kernel_layout(self, dy: Any) -> tuple[Any, int]:
        """``(dy, ld)`` with unit-stride rows; copies only when the kernel cannot read ``dy`` as it is."""
        item = dy.itemsize
        batch, m = dy.shape
        s0, s1 = dy.strides
        usable = dy.data.ptr % item == 0 and s0 % item == 0 and (m <= 1 or s1 == item)
        if not usable:
            dy = self.xp.ascontiguousarray(dy)
            s0 = dy.strides[0]
        ld = s0 // item if batch > 1 else m
        return dy, ld

    def nvtx_range(self, name: str) -> ContextManager[None]:
        """An NVTX range (``nvtx`` package, else ``cupy.cuda.nvtx``, else a no-op)."""
        return _nvtx.nvtx_range(name)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> Any:
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def describe(self) -> dict[str, str]:
        cp = self.xp
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        if isinstance(name, bytes):
            name = name.decode()
        # CuPy's and CUDA's versions are reported by gpudense.info; these are the device's facts.
        return {
            "device": f"{dev.id}: {name} (sm_{props['major']}{props['minor']}, "
                      f"{props['multiProcessorCount']} SMs)",
            "nvtx": _nvtx.nvtx_provider(),
        }
