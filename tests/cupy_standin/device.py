"""The stand-in's ``cupy.cuda``, kernels, ``cupy.cublas``, ``cupy.cuda.nccl`` and ``cupyx.distributed``."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import tempfile
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np

from cupy_standin import arrays
from cupy_standin.arrays import ALLOCATIONS, cupy, ndarray, owner

#: Every recorded call, in order: ("stream.synchronize",), ("nvtx.push", name), ("launch", name, grid, block), ...
CALLS: list[tuple[Any, ...]] = []

#: How many devices the stand-in's runtime reports (CUPY_STANDIN_DEVICES, default 1).
N_DEVICES = int(os.environ.get("CUPY_STANDIN_DEVICES", "1"))
_current = threading.local()


class CUDARuntimeError(RuntimeError):
    pass


def _device_id() -> int:
    return getattr(_current, "id", 0)


class Device:
    """``cupy.cuda.Device``: an id, ``use()``, a context manager, the attributes gpudense asks for."""

    attributes = {"MultiProcessorCount": 4, "MaxRegistersPerMultiprocessor": 65536,
                  "MaxThreadsPerMultiProcessor": 2048}
    compute_capability = "90"

    def __init__(self, device: int | None = None) -> None:
        self.id = _device_id() if device is None else int(device)
        if not 0 <= self.id < N_DEVICES:
            # cupy_backends/cuda/api/runtime.pyx: setDevice raises CUDARuntimeError(cudaErrorInvalidDevice).
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    def use(self) -> None:
        _current.id = self.id

    def synchronize(self) -> None:
        CALLS.append(("device.synchronize", self.id))

    def __enter__(self) -> Device:
        self._before = _device_id()
        self.use()
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.id = self._before


def _properties(device: int) -> dict[str, Any]:
    return {"name": b"CuPy stand-in (host)", "major": 9, "minor": 0, "multiProcessorCount": 4,
            "totalGlobalMem": 1 << 34}


runtime = types.ModuleType("cupy.cuda.runtime")
runtime.CUDARuntimeError = CUDARuntimeError
runtime.getDeviceCount = lambda: N_DEVICES
runtime.getDevice = _device_id
runtime.setDevice = lambda d: Device(d).use()
runtime.runtimeGetVersion = lambda: 13000
runtime.driverGetVersion = lambda: 13000
runtime.getDeviceProperties = _properties
runtime.memGetInfo = lambda: (1 << 31, 1 << 32)  # a 4 GiB device, 2 GiB free: host memory is shared


class Stream:
    """``cupy.cuda.Stream``: ``ptr`` 0 (the null stream), ``synchronize`` recorded."""

    ptr = 0

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False, priority: Any = None) -> None:
        self.non_blocking = non_blocking

    def use(self) -> Stream:
        CALLS.append(("stream.use",))
        return self

    def synchronize(self) -> None:
        CALLS.append(("stream.synchronize",))

    def record(self, event: Any = None) -> Event:
        # cupy/cuda/stream.pyx: _BaseStream.record makes an Event when given none, records it, returns it.
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event: Any) -> None:
        # cupy/cuda/stream.pyx: _BaseStream.wait_event passes event.ptr to cudaStreamWaitEvent: an Event only.
        if not isinstance(event, Event):
            raise TypeError(f"wait_event needs a cupy.cuda.Event; got {type(event).__name__}")
        CALLS.append(("stream.wait_event",))

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


_NULL_STREAM = Stream()


class Event:
    """``cupy.cuda.Event``: ``record`` and ``synchronize`` recorded."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        self.recorded = False

    def record(self, stream: Any = None) -> None:
        self.recorded = True
        CALLS.append(("event.record",))

    def synchronize(self) -> None:
        CALLS.append(("event.synchronize",))


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    # cupy/cuda/stream.pyx: get_elapsed_time needs both events recorded (cudaErrorInvalidResourceHandle).
    if not (start_event.recorded and end_event.recorded):
        raise CUDARuntimeError("cudaErrorInvalidResourceHandle: an event was not recorded")
    CALLS.append(("event.elapsed",))
    return 0.0


class MemoryPool:
    """``cupy.cuda.MemoryPool``: the bytes of the stand-in's live allocations; ``free_all_blocks`` recorded."""

    def used_bytes(self) -> int:
        owner(0)  # forget the freed ones
        return sum(end - start for start, (end, *_rest) in ALLOCATIONS.items())

    total_bytes = used_bytes

    def free_all_blocks(self, stream: Any = None) -> None:
        CALLS.append(("pool.free_all_blocks",))

    def set_limit(self, size: Any = None, fraction: Any = None) -> None:
        CALLS.append(("pool.set_limit", size, fraction))

    def get_limit(self) -> int:
        return 0


_POOL = MemoryPool()

memory = types.ModuleType("cupy.cuda.memory")
memory.OutOfMemoryError = type("OutOfMemoryError", (MemoryError,), {})
memory.MemoryPool = MemoryPool

nvtx = types.ModuleType("cupy.cuda.nvtx")
nvtx.available = True
nvtx.RangePush = lambda message, id_color=-1: CALLS.append(("nvtx.push", message))  # cupy/cuda/nvtx.pyx
nvtx.RangePop = lambda: CALLS.append(("nvtx.pop",))
nvtx.Mark = lambda message, id_color=-1: CALLS.append(("nvtx.mark", message))


class CompileException(Exception):
    """``cupy.cuda.compiler.CompileException``: the compiler's log in ``get_message()``."""

    def __init__(self, msg: str, source: str = "", name: str = "", options: Any = (), backend: str = "nvrtc"):
        super().__init__(msg)
        self._msg = msg

    def get_message(self) -> str:
        return self._msg


compiler = types.ModuleType("cupy.cuda.compiler")
compiler.CompileException = CompileException


# -- RawModule and RawKernel: the host build of kernels/*.cu ----------------------------------

_host: dict[str, Any] = {}
_host_lock = threading.Lock()


def _host_library() -> Any:
    """The host build of every kernels/*.cu (tests/kernel_build.py), built once per process."""
    with _host_lock:
        if "lib" not in _host:
            from kernel_build import build_host_kernels

            _host["dir"] = tempfile.TemporaryDirectory(prefix="cupy-standin-")
            _host["lib"] = build_host_kernels(Path(_host["dir"].name))
        return _host["lib"]


def _signatures() -> dict[str, Any]:
    from kernel_build import kernel_signatures

    return kernel_signatures()


class RawKernel:
    """One entry point of a :class:`RawModule`, launched on the host build of the same file."""

    #: Registers per thread the stand-in reports (within what nvcc reports for these kernels), and no
    #: local memory (nvcc reports none: tests/cuda/test_kernels_compile.py).
    num_regs = 64
    local_size_bytes = 0

    def __init__(self, name: str) -> None:
        self.name = name
        self.params = _signatures()[name]

    def __call__(self, grid: Any, block: Any, args: Any, *, shared_mem: int = 0, stream: Any = None) -> None:
        # cupy/cuda/function.pyx: Function.__call__ takes grid and block as tuples, pads them to
        # three dimensions and launches at least 1 in each; _launch passes each argument through
        # _pointer (a cupy.ndarray as its device pointer, anything else as a CScalar of its type).
        if not isinstance(grid, tuple) or not isinstance(block, tuple):
            raise TypeError(f"grid and block must be tuples, got {type(grid).__name__}, {type(block).__name__}")
        grid = tuple(max(1, int(g)) for g in (grid + (1, 1))[:3])
        block = tuple(max(1, int(b)) for b in (block + (1, 1))[:3])
        if block[0] * block[1] * block[2] > 1024 or grid[0] > 2**31 - 1 or max(grid[1:]) > 65535:
            raise CUDARuntimeError(f"CUDA_ERROR_INVALID_VALUE: launch of {self.name} with grid {grid}, block {block}")
        if grid[2] != 1 or block[2] != 1:
            raise NotImplementedError("the stand-in runs 2-D grids and blocks (the kernels use no z)")
        if not isinstance(args, tuple) or len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        values = [_kernel_argument(self.name, p, a) for p, a in zip(self.params, args)]
        argv = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        lib = _host_library()
        lib.emu_set_bounds(ctypes.c_size_t(0), ctypes.c_size_t(0), ctypes.c_size_t(1), None)
        ui = ctypes.c_uint
        getattr(lib, f"launch_{self.name}")(argv, ui(grid[0]), ui(grid[1]), ui(block[0]), ui(block[1]))
        CALLS.append(("launch", self.name, grid, block))


def _kernel_argument(kernel: str, p: Any, a: Any) -> Any:
    """The C value of argument ``a`` for parameter ``p``, refused where type or width differ."""
    if p.pointer:
        if a is None:  # cupy/cuda/function.pyx: _pointer passes None as a null pointer
            return ctypes.c_void_p(0)
        if not isinstance(a, ndarray):
            raise TypeError(f"{kernel}: parameter {p.name} is a {p.dtype} pointer; got {type(a).__name__}")
        if a.dtype != np.dtype(arrays.check_dtype(_dtype(p.dtype))):
            raise TypeError(f"{kernel}: parameter {p.name} points to {p.dtype}; got a {a.dtype} array")
        if a.size and owner(a.data.ptr) is None:
            raise ValueError(f"{kernel}: parameter {p.name} points outside every live allocation")
        return ctypes.c_void_p(a.data.ptr)
    # cupy/_core/_scalar.pyx: CScalar keeps a NumPy scalar's own type and makes a Python int an
    # int64, a float a float64; the kernel reads as many bytes as its parameter's type has.
    if isinstance(a, ndarray) or isinstance(a, np.ndarray):
        raise TypeError(f"{kernel}: parameter {p.name} is a {p.dtype} scalar; got an array")
    got = np.dtype(type(a)) if isinstance(a, np.generic) else {bool: np.dtype(bool), int: np.dtype(np.int64),
                                                              float: np.dtype(np.float64)}.get(type(a))
    if got != np.dtype(p.dtype):
        raise TypeError(f"{kernel}: parameter {p.name} is {p.dtype} ({p.ctype}); got {got} ({a!r})")
    return np.ctypeslib.as_ctypes_type(got)(a)


def _dtype(name: str) -> Any:
    return arrays._bfloat16() if name == "bfloat16" else np.dtype(name)


class RawModule:
    """``cupy.RawModule(code=..., options=...)``: the code is checked as NVRTC would preprocess it."""

    def __init__(self, code: str | None = None, *, path: str | None = None, options: tuple = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 name_expressions: Any = None, jitify: Any = None) -> None:
        if code is None or path is not None:
            raise NotImplementedError("the stand-in builds RawModule(code=...) only")
        if not isinstance(options, tuple):
            raise TypeError(f"options must be a tuple, got {type(options).__name__}")
        self.code, self.options = code, options
        self._checked = False

    def _preprocess(self) -> None:
        """The code compiled by the host compiler with the module's -D options, in NVRTC's place.

        The host harness's prelude stands in for the CUDA built-ins; an
        error (a syntax error, an ``#error`` for a missing option) raises
        :class:`CompileException` with the compiler's log, as NVRTC's would.
        """
        if self._checked:
            return
        from kernel_build import GXX, HARNESS

        defines = [o for o in self.options if o.startswith("-D")]
        prelude = HARNESS[: HARNESS.index("KERNEL_INCLUDES")]
        check = subprocess.run([GXX or "g++", "-std=c++20", "-fsyntax-only", "-x", "c++", *defines, "-"],
                               input=prelude + "\n" + self.code, capture_output=True, text=True, timeout=120)
        if check.returncode != 0:
            raise CompileException(check.stderr)
        res = subprocess.run([GXX or "cpp", "-E", "-P", "-x", "c++", *defines, "-"], input=self.code,
                             capture_output=True, text=True, timeout=120)
        self._entries = set(re.findall(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\(\w+\)\s+)?(\w+)',
                                       res.stdout))
        self._checked = True

    def get_function(self, name: str) -> RawKernel:
        self._preprocess()
        if name not in self._entries:
            # cupy_backends/cuda/api/driver.pyx: moduleGetFunction raises CUDADriverError.
            raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name})")
        return RawKernel(name)


# -- ElementwiseKernel: the body on the host --------------------------------------------------

_C_TYPES = {"float32": ("float", ctypes.c_float), "float64": ("double", ctypes.c_double),
            "float16": ("_Float16", None), "int32": ("int", ctypes.c_int)}


class ElementwiseKernel:
    """``cupy.ElementwiseKernel``: type names bound from the arrays, the body run by a host build."""

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel",
                 reduce_dims: bool = True, preamble: str = "", no_return: bool = False, return_tuple: bool = False,
                 **kwargs: Any) -> None:
        from kernel_build import elementwise_params

        self.in_params, self.out_params, self.operation, self.name = in_params, out_params, operation, name
        self.preamble = preamble
        self.params = [(*p, "in") for p in elementwise_params(in_params)] + \
                      [(*p, "out") for p in elementwise_params(out_params)]

    def __call__(self, *args: Any, size: Any = None, stream: Any = None) -> None:
        from kernel_build import build_host_elementwise

        if len(args) != len(self.params):
            # cupy/_core/_kernel.pyx: ElementwiseKernel.__call__ ('Wrong number of arguments for ...').
            raise TypeError(f"Wrong number of arguments for {self.name!r}")
        bound: dict[str, np.dtype] = {}
        n = None
        for (kind, pname, io), a in zip(self.params, args):
            if isinstance(a, np.ndarray) or (io == "out" and not isinstance(a, ndarray)):
                # cupy/_core/_kernel.pyx: _preprocess_args (a CScalar refuses an array) and
                # _get_out_args ('Output arguments type must be cupy.ndarray').
                raise TypeError(f"{self.name}: {pname} must be a cupy.ndarray or a scalar; got {type(a)}")
            if isinstance(a, ndarray):
                if not a.flags.c_contiguous:
                    raise NotImplementedError("the stand-in's ElementwiseKernel takes C-contiguous arrays")
                if n is not None and a.size != n:
                    raise ValueError(f"{self.name}: {pname} has {a.size} elements, another array {n}")
                n = a.size
                if len(kind) == 1 and kind.isupper():
                    if bound.setdefault(kind, a.dtype) != a.dtype:
                        # cupy/_core/_kernel.pyx: _decide_params_type ('Type is mismatched').
                        raise TypeError(f"Type is mismatched. {pname} {kind} {a.dtype} {bound[kind]}")
        ctypes_ = {k: _C_TYPES[np.dtype(v).name] for k, v in bound.items()}
        c = {k: v[0] for k, v in ctypes_.items()}
        fn = build_host_elementwise(_work_dir(), self.in_params, self.out_params, self.operation, self.name,
                                    c.get("T", "float"), c.get("G", c.get("T", "float")), c.get("P", "_Float16"))
        call = [ctypes.c_long(n or 0)]
        for (kind, pname, io), a in zip(self.params, args):
            if isinstance(a, ndarray):
                call.append(ctypes.c_void_p(a.data.ptr))
            else:  # a scalar, cast to its parameter's type as CuPy casts it
                ctype = _C_TYPES["int32"][1] if kind == "int32" else ctypes_[kind][1]
                call.append(ctype(a))
        fn(*call)
        CALLS.append(("elementwise", self.name, {k: np.dtype(v).name for k, v in bound.items()}))


def _work_dir() -> Path:
    with _host_lock:
        if "dir" not in _host:
            _host["dir"] = tempfile.TemporaryDirectory(prefix="cupy-standin-")
        return Path(_host["dir"].name)


# -- cupy.cublas.gemm --------------------------------------------------------------------------

class CUBLASError(RuntimeError):
    pass


_OP_N, _OP_T = 0, 1


def _cublas_gemm(dtype: np.dtype, transa: int, transb: int, m: int, n: int, k: int, alpha: Any, a: int, lda: int,
                 b: int, ldb: int, beta: Any, c: int, ldc: int) -> None:
    """cublas<t>gemm on column-major memory: the argument checks of cuBLAS, then C = alpha op(A) op(B) + beta C."""
    rows_a = m if transa == _OP_N else k
    rows_b = k if transb == _OP_N else n
    if m < 0 or n < 0 or k < 0 or lda < max(1, rows_a) or ldb < max(1, rows_b) or ldc < max(1, m):
        # cuBLAS returns CUBLAS_STATUS_INVALID_VALUE; cupy_backends/cuda/libs/cublas.pyx: check_status raises.
        raise CUBLASError(f"CUBLAS_STATUS_INVALID_VALUE (m={m}, n={n}, k={k}, lda={lda}, ldb={ldb}, ldc={ldc})")
    if m == 0 or n == 0:
        return
    item = dtype.itemsize

    def matrix(ptr: int, rows: int, cols: int, ld: int) -> np.ndarray:
        span = ((cols - 1) * ld + rows) * item if rows and cols else 0
        raw = (ctypes.c_char * max(span, 1)).from_address(ptr)
        return np.ndarray((rows, cols), dtype, buffer=raw, strides=(item, ld * item))
    A = matrix(a, rows_a, m if transa != _OP_N else k, lda)
    B = matrix(b, rows_b, n if transb == _OP_N else k, ldb)
    C = matrix(c, m, n, ldc)
    opa = A if transa == _OP_N else A.T
    opb = B if transb == _OP_N else B.T
    prod = opa @ opb if k else np.zeros((m, n), dtype)
    C[...] = dtype.type(alpha) * prod + dtype.type(beta) * C if beta != 0 else dtype.type(alpha) * prod


def gemm(transa: str, transb: str, a: ndarray, b: ndarray, out: ndarray | None = None, alpha: float = 1.0,
         beta: float = 0.0) -> ndarray:
    """``cupy.cublas.gemm``, its layout decisions as cupy/cublas.py: gemm makes them."""
    # cupy/cublas.py: gemm asserts 2-D operands of one dtype and takes float32 and float64
    # (and the complex types): float16 and bfloat16 raise TypeError('invalid dtype').
    assert a.ndim == b.ndim == 2
    assert a.dtype == b.dtype
    if a.dtype.char not in "fd":
        raise TypeError("invalid dtype")
    ta = {"N": _OP_N, "T": _OP_T}[transa]
    tb = {"N": _OP_N, "T": _OP_T}[transb]
    m, k = a.shape if ta == _OP_N else a.shape[::-1]
    if tb == _OP_N:
        n = b.shape[1]
        assert b.shape[0] == k
    else:
        n = b.shape[0]
        assert b.shape[1] == k
    if out is None:
        out = cupy.empty((m, n), dtype=a.dtype, order="F")
        beta = 0.0
    else:
        assert out.ndim == 2
        assert out.shape == (m, n)
        assert out.dtype == a.dtype

    # cupy/cublas.py: _decide_ld_and_trans -- an F-contiguous operand keeps its op with ld its rows,
    # a C-contiguous one flips the op with ld its columns, any other layout is copied to F order.
    def ld_and_trans(x: ndarray, trans: int) -> tuple[int | None, int]:
        if x._f_contiguous:
            return x.shape[0], trans
        if x._c_contiguous:
            return x.shape[1], 1 - trans
        return None, trans
    lda, ta = ld_and_trans(a, ta)
    ldb, tb = ld_and_trans(b, tb)
    CALLS.append(("cublas.gemm", a.dtype.name, (m, n, k)))
    if lda is not None and ldb is not None:
        if out._f_contiguous:
            _cublas_gemm(a.dtype, ta, tb, m, n, k, alpha, a.data.ptr, lda, b.data.ptr, ldb, beta, out.data.ptr, m)
            return out
        if out._c_contiguous:  # out.T = b.T @ a.T
            _cublas_gemm(a.dtype, 1 - tb, 1 - ta, n, m, k, alpha, b.data.ptr, ldb, a.data.ptr, lda, beta,
                         out.data.ptr, n)
            return out
    # cupy/cublas.py: _change_order_if_necessary copies an operand of another layout to F order.
    if lda is None:
        lda, a = a.shape[0], a.copy(order="F")
    if ldb is None:
        ldb, b = b.shape[0], b.copy(order="F")
    c = out if out._f_contiguous else out.copy(order="F")
    _cublas_gemm(a.dtype, ta, tb, m, n, k, alpha, a.data.ptr, lda, b.data.ptr, ldb, beta, c.data.ptr, m)
    if c is not out:
        out[...] = c
    return out


cublas = types.ModuleType("cupy.cublas")
cublas.gemm = gemm
cublas.CUBLASError = CUBLASError


# -- cupy.cuda.nccl: NCCL's types and collectives, done over MPI between the processes ----------

class NcclError(RuntimeError):
    pass


nccl = types.ModuleType("cupy.cuda.nccl")
nccl.available = True
nccl.NcclError = NcclError
# NCCL's ncclDataType_t and ncclRedOp_t (nccl.h), as cupy_backends/cuda/libs/nccl.pyx exports them.
_NCCL_CONSTANTS = {"NCCL_INT8": 0, "NCCL_CHAR": 0, "NCCL_UINT8": 1, "NCCL_INT32": 2, "NCCL_INT": 2,
                   "NCCL_UINT32": 3, "NCCL_INT64": 4, "NCCL_UINT64": 5, "NCCL_FLOAT16": 6, "NCCL_HALF": 6,
                   "NCCL_FLOAT32": 7, "NCCL_FLOAT": 7, "NCCL_FLOAT64": 8, "NCCL_DOUBLE": 8, "NCCL_BFLOAT16": 9,
                   "NCCL_SUM": 0, "NCCL_PROD": 1, "NCCL_MAX": 2, "NCCL_MIN": 3, "NCCL_AVG": 4}
for _k, _v in _NCCL_CONSTANTS.items():
    setattr(nccl, _k, _v)
#: The element type NCCL reads for each datatype.
_NCCL_ELEMENT = {0: "int8", 1: "uint8", 2: "int32", 3: "uint32", 4: "int64", 5: "uint64", 6: "float16",
                 7: "float32", 8: "float64", 9: "bfloat16"}
nccl.get_version = lambda: 22707
nccl.get_unique_id = lambda: tuple(int(b) for b in np.random.default_rng().integers(-128, 128, 128))


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD


class NcclCommunicator:
    """``cupy.cuda.nccl.NcclCommunicator(ndev, commId, rank)`` over ``MPI.COMM_WORLD``.

    Strict where a wrong call would give wrong numbers silently on a GPU: the
    datatype must be the element type of the allocation the pointer lies in
    (NCCL cannot know it; the stand-in does), and the ``count`` elements must
    lie inside that allocation.
    """

    def __init__(self, ndev: int, commId: Any, rank: int) -> None:
        comm = _mpi()
        if comm.Get_size() != ndev or comm.Get_rank() != rank:
            raise NcclError(f"ncclInvalidArgument: {ndev} ranks, rank {rank}; MPI has {comm.Get_size()}, "
                            f"rank {comm.Get_rank()}")
        ids = comm.allgather((tuple(commId), _device_id(), os.uname().nodename))
        if len({i for i, _, _ in ids}) != 1:
            raise NcclError("ncclInvalidUsage: the ranks were given different unique ids")
        if len({(d, h) for _, d, h in ids}) != ndev:
            raise NcclError("ncclInvalidUsage: two ranks share a GPU")
        self._comm, self._rank, self.size = comm, rank, ndev
        CALLS.append(("nccl.init", ndev, rank))

    def _buffer(self, ptr: int, count: int, datatype: int) -> np.ndarray:
        found = owner(ptr)
        if found is None:
            raise NcclError(f"ncclInvalidArgument: address {ptr:#x} is not device memory")
        start, end, dtype = found
        want = _dtype(_NCCL_ELEMENT[datatype])
        if dtype != want:
            raise TypeError(f"NCCL datatype {_NCCL_ELEMENT[datatype]} on memory of dtype {dtype}: the sum of "
                            f"another type's bits is not the sum of the values")
        if ptr + count * want.itemsize > end:
            raise NcclError("ncclInvalidArgument: count runs past the allocation")
        raw = (ctypes.c_char * max(count * want.itemsize, 1)).from_address(ptr)
        return np.frombuffer(raw, want, count=count)

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, stream: int) -> None:
        if op != nccl.NCCL_SUM:
            raise NotImplementedError("the stand-in sums only")
        send, recv = self._buffer(sendbuf, count, datatype), self._buffer(recvbuf, count, datatype)
        parts = self._comm.allgather(send.copy())
        total = parts[0].copy()
        for p in parts[1:]:  # in rank order, rounded to the datatype at each step, alike on every rank
            total = (total + p).astype(send.dtype)
        recv[...] = total
        CALLS.append(("nccl.allReduce", _NCCL_ELEMENT[datatype], count))

    def broadcast(self, sendbuf: int, recvbuf: int, count: int, datatype: int, root: int, stream: int) -> None:
        send = self._buffer(sendbuf, count, datatype)
        data = self._comm.bcast(send.copy() if self._rank == root else None, root=root)
        self._buffer(recvbuf, count, datatype)[...] = data
        CALLS.append(("nccl.broadcast", _NCCL_ELEMENT[datatype], count, root))

    def bcast(self, buff: int, count: int, datatype: int, root: int, stream: int) -> None:
        self.broadcast(buff, buff, count, datatype, root, stream)

    def rank_id(self) -> int:
        return self._rank

    def destroy(self) -> None:
        CALLS.append(("nccl.destroy",))


nccl.NcclCommunicator = NcclCommunicator


# -- cupyx.distributed.NCCLBackend, with CuPy's own dtype table ---------------------------------

# cupyx/distributed/_nccl_comm.py: _nccl_dtypes -- by dtype.char; no bfloat16.
_nccl_dtypes = {"b": nccl.NCCL_INT8, "B": nccl.NCCL_UINT8, "i": nccl.NCCL_INT32, "I": nccl.NCCL_UINT32,
                "l": nccl.NCCL_INT64, "L": nccl.NCCL_UINT64, "q": nccl.NCCL_INT64, "Q": nccl.NCCL_UINT64,
                "e": nccl.NCCL_FLOAT16, "f": nccl.NCCL_FLOAT32, "d": nccl.NCCL_FLOAT64,
                "F": nccl.NCCL_FLOAT32, "D": nccl.NCCL_FLOAT64}


def _get_nccl_dtype_and_count(array: ndarray, count: int | None = None) -> tuple[int, int]:
    # cupyx/distributed/_nccl_comm.py: _get_nccl_dtype_and_count.
    dtype = array.dtype.char
    if dtype not in _nccl_dtypes:
        raise TypeError(f"Unknown dtype {array.dtype} for NCCL")
    if count is None:
        count = array.size
    if dtype in "FD":
        return _nccl_dtypes[dtype], 2 * count
    return _nccl_dtypes[dtype], count


class NCCLBackend:
    """``cupyx.distributed.NCCLBackend`` with ``use_mpi=True``: all_reduce and broadcast as CuPy does them."""

    def __init__(self, n_devices: int, rank: int, host: str = "127.0.0.1", port: int = 13333,
                 use_mpi: bool = False) -> None:
        # cupyx/distributed/_nccl_comm.py: NCCLBackend._init_with_mpi.
        if not use_mpi:
            raise NotImplementedError("the stand-in starts NCCLBackend through MPI only")
        comm = _mpi()
        comm.Barrier()
        nccl_id = nccl.get_unique_id() if comm.Get_rank() == 0 else None
        nccl_id = comm.bcast(nccl_id, root=0)
        self._comm = NcclCommunicator(n_devices, nccl_id, rank)
        self.rank = rank

    @staticmethod
    def _check_contiguous(a: ndarray) -> None:
        if not a.flags.c_contiguous and not a.flags.f_contiguous:
            raise RuntimeError("NCCL requires arrays to be either c- or f-contiguous")

    def all_reduce(self, in_array: ndarray, out_array: ndarray, op: str = "sum", stream: Any = None) -> None:
        # cupyx/distributed/_nccl_comm.py: _DenseNCCLCommunicator.all_reduce.
        self._check_contiguous(in_array)
        self._check_contiguous(out_array)
        dtype, count = _get_nccl_dtype_and_count(in_array)
        self._comm.allReduce(in_array.data.ptr, out_array.data.ptr, count, dtype, nccl.NCCL_SUM, 0)

    def broadcast(self, in_out_array: ndarray, root: int = 0, stream: Any = None) -> None:
        # cupyx/distributed/_nccl_comm.py: _DenseNCCLCommunicator.broadcast.
        self._check_contiguous(in_out_array)
        dtype, count = _get_nccl_dtype_and_count(in_out_array)
        self._comm.broadcast(in_out_array.data.ptr, in_out_array.data.ptr, count, dtype, root, 0)


distributed = types.ModuleType("cupyx.distributed")
distributed.NCCLBackend = NCCLBackend
cupyx = types.ModuleType("cupyx")
cupyx.distributed = distributed


def empty_pinned(shape: Any, dtype: Any = float, order: str = "C") -> np.ndarray:
    # cupyx/_pinned_array.py: empty_pinned returns a NumPy array over pinned host memory (here: plain memory).
    CALLS.append(("empty_pinned",))
    return np.empty(shape, dtype=dtype, order=order)


cupyx.empty_pinned = empty_pinned


# -- cupy.cuda and the names on cupy ------------------------------------------------------------

cuda = types.ModuleType("cupy.cuda")
for _name, _value in (("Device", Device), ("Stream", Stream), ("Event", Event), ("get_elapsed_time", get_elapsed_time),
                      ("runtime", runtime), ("nvtx", nvtx), ("compiler", compiler), ("memory", memory),
                      ("nccl", nccl), ("MemoryPool", MemoryPool)):
    setattr(cuda, _name, _value)
cuda.get_current_stream = lambda device_id=-1: _NULL_STREAM
cuda.is_available = lambda: True
cuda.MemoryPointer = arrays._Pointer
cupy.cuda = cuda
cupy.cublas = cublas
cupy.RawModule = RawModule
cupy.RawKernel = RawKernel
cupy.ElementwiseKernel = ElementwiseKernel
cupy.get_default_memory_pool = lambda: _POOL
