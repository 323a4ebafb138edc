"""The kernel builds the tests share: the host C++ build of kernels/*.cu, and reading compiler reports."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gpudense.backends.cuda.loader import KERNEL_FILES, kernel_defines

KERNELS_DIR = Path(__file__).resolve().parents[1] / "kernels"
GXX = shutil.which("g++")


def parse_ptxas(log: str) -> dict[str, dict[str, int]]:
    """``{entry: {registers, stack, spill_stores, spill_loads}}`` from ``-Xptxas -v`` output."""
    found: dict[str, dict[str, int]] = {}
    for part in re.split(r"Compiling entry function ", log)[1:]:
        name = re.match(r"'([^']+)'", part).group(1)
        regs = re.search(r"Used (\d+) registers", part)
        frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", part)
        assert regs and frame, f"unparsed ptxas report for {name}:\n{part}"
        found[name] = {
            "registers": int(regs.group(1)),
            "stack": int(frame.group(1)),
            "spill_stores": int(frame.group(2)),
            "spill_loads": int(frame.group(3)),
        }
    return found


def nvrtc_build(library, source: str, name: str, options) -> tuple[int, str]:
    """``(result, log)``: NVRTC's build of ``source`` by the NVRTC library file ``library``, through ctypes.

    ``result`` is NVRTC's ``nvrtcResult`` (0: success). The library's
    ``libnvrtc-builtins`` (beside it) is loaded first, as cuda.pathfinder
    does, since NVRTC finds it by name only.
    """
    import ctypes
    from pathlib import Path

    library = Path(library)
    major = library.name.rsplit(".", 1)[-1]
    for builtins in sorted(library.parent.glob(f"libnvrtc-builtins.so.{major}.*")):
        ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(str(library))
    program = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), 0, None, None) != 0:
        raise RuntimeError(f"nvrtcCreateProgram failed for {name}")
    try:
        args = [o.encode() for o in options]
        result = nvrtc.nvrtcCompileProgram(program, len(args), (ctypes.c_char_p * len(args))(*args))
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        return result, log.value.decode(errors="replace")
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


def nvrtc_version(library) -> tuple[int, int]:
    """``(major, minor)`` of the NVRTC library file ``library``."""
    import ctypes

    nvrtc = ctypes.CDLL(str(library))
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


# Host emulation: the .cu files themselves, compiled with g++ and run thread by thread.
#
# A prelude defines the CUDA built-ins the kernel uses (threadIdx, blockIdx,
# blockDim, __syncthreads, __ldcs, vector types, __shared__ as a static shared
# by a block's threads) and the file is #included unchanged, built with the
# -D options of kernel_defines(). Each block runs as one std::thread per
# thread of the block, meeting at a std::barrier, blocks one after another.
# __ldcs checks every dY read: inside the buffer, 16-byte aligned for 16-byte
# loads, and counted per element: each dY element must be read exactly once and
# nothing else at all (padding, bytes past a row's end). The result must equal
# emulate_bias_grad bit for bit.

HARNESS = r"""
#include <atomic>
#include <cmath>
#include <cstddef>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
struct uint4 { unsigned x, y, z, w; };
thread_local dim3 threadIdx;
static dim3 blockIdx, blockDim, gridDim;
static std::barrier<>* g_barrier = nullptr;
static uintptr_t g_lo = 0, g_hi = 0, g_item = 1;
static int* g_counts = nullptr;  // reads per element of [g_lo, g_hi)
static std::atomic<long long> g_bad_reads{0}, g_misaligned{0};

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __shared__ static

static inline void __syncthreads() { g_barrier->arrive_and_wait(); }
static inline long long min(long long a, long long b) { return a < b ? a : b; }

template <class T> static inline T __ldcs(const T* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (g_hi != 0 && (a < g_lo || a + sizeof(T) > g_hi)) { g_bad_reads++; T z; std::memset(&z, 0, sizeof z); return z; }
    if (sizeof(T) == 16 && a % 16 != 0) g_misaligned++;
    for (uintptr_t k = 0; g_counts && k < sizeof(T) / g_item; ++k)
        std::atomic_ref<int>(g_counts[(a - g_lo) / g_item + k]).fetch_add(1);
    T v; std::memcpy(&v, p, sizeof v); return v;
}

static inline float gpudense_h2f(unsigned short h) { _Float16 v; std::memcpy(&v, &h, 2); return (float)v; }
static inline unsigned short gpudense_f2h(float f) { _Float16 v = (_Float16)f; unsigned short h; std::memcpy(&h, &v, 2); return h; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline float gpudense_tanh(float a) { return std::tanh(a); }
static inline double gpudense_tanh(double a) { return std::tanh(a); }

#define GPUDENSE_HOST_EMULATION 1
KERNEL_INCLUDES

// The block's threads are made once per launch and run the blocks one after another, meeting at
// `phase` before and after each block (and at g_barrier for __syncthreads inside it).
template <class F> static void launch(dim3 grid, dim3 block, F body) {
    gridDim = grid; blockDim = block;
    const unsigned nt = block.x * block.y;
    std::barrier<> bar(nt);
    g_barrier = &bar;
    std::barrier<> phase(nt + 1);
    bool done = false;
    std::vector<std::thread> ts;
    for (unsigned ty = 0; ty < block.y; ++ty)
        for (unsigned tx = 0; tx < block.x; ++tx)
            ts.emplace_back([&, tx, ty] {
                threadIdx = dim3{tx, ty, 1};
                for (;;) {
                    phase.arrive_and_wait();
                    if (done) return;
                    body();
                    phase.arrive_and_wait();
                }
            });
    for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            blockIdx = dim3{bx, by, 1};
            phase.arrive_and_wait();  // the block starts
            phase.arrive_and_wait();  // and has ended
        }
    }
    done = true;
    phase.arrive_and_wait();
    for (auto& th : ts) th.join();
}

extern "C" void emu_set_bounds(uintptr_t lo, uintptr_t hi, uintptr_t item, int* counts) {
    g_lo = lo; g_hi = hi; g_item = item; g_counts = counts; g_bad_reads = 0; g_misaligned = 0;
}
extern "C" long long emu_bad_reads() { return g_bad_reads; }
extern "C" long long emu_misaligned() { return g_misaligned; }

#define EMU(SUF, T, ACC)                                                                                   \
extern "C" void emu_pass1_##SUF(const T* dy, long long batch, long long m, long long ld, long long chunk_rows, \
                                int head, int vec_path, ACC* ws, T* out, int final_pass, int accumulate,    \
                                unsigned gx, unsigned gy, unsigned bx, unsigned by) {                      \
    launch(dim3{gx, gy, 1}, dim3{bx, by, 1}, [=] {                                                         \
        bias_grad_pass1_##SUF(dy, batch, m, ld, chunk_rows, head, vec_path, ws, out, final_pass, accumulate); }); \
}                                                                                                          \
extern "C" void emu_pass2_##SUF(const ACC* ws, long long n_chunks, long long m, T* out, int accumulate,   \
                                unsigned gx, unsigned bx, unsigned by) {                                   \
    launch(dim3{gx, 1, 1}, dim3{bx, by, 1}, [=] { bias_grad_pass2_##SUF(ws, n_chunks, m, out, accumulate); }); \
}
EMU(f64, double, double)
EMU(f32, float, float)
EMU(f16, unsigned short, float)
EMU(bf16, unsigned short, float)

#define EMU_ACT(A, SUF, T, ACC)                                                                              \
extern "C" void emu_act_##A##_##SUF(const T* dy, const T* sv, T* dz, long long batch, long long m,          \
                                    long long ld, long long chunk_rows, int head, int vec_path, ACC* ws,    \
                                    T* out, int final_pass, int accumulate,                                 \
                                    unsigned gx, unsigned gy, unsigned bx, unsigned by) {                   \
    launch(dim3{gx, gy, 1}, dim3{bx, by, 1}, [=] {                                                         \
        act_bias_grad_##A##_##SUF(dy, sv, dz, batch, m, ld, chunk_rows, head, vec_path, ws, out, final_pass, \
                                  accumulate); });                                                          \
}                                                                                                          \
extern "C" void emu_fwd_##A##_##SUF(T* z, const T* b, T* y, long long n, long long m, int has_bias, int vec, \
                                    int write_z, unsigned gx, unsigned bx) {                                \
    launch(dim3{gx, 1, 1}, dim3{bx, 1, 1}, [=] { bias_act_##A##_##SUF(z, b, y, n, m, has_bias, vec, write_z); }); \
}
#define EMU_ACTS(SUF, T, ACC) EMU_ACT(relu, SUF, T, ACC) EMU_ACT(gelu, SUF, T, ACC) EMU_ACT(tanh, SUF, T, ACC)
EMU_ACTS(f64, double, double)
EMU_ACTS(f32, float, float)
EMU_ACTS(f16, unsigned short, float)
EMU_ACTS(bf16, unsigned short, float)

// One launcher per entry point, as the driver launches a kernel: grid, block and an array of
// pointers to the arguments (generated from the kernels' signatures by launchers()).
LAUNCHERS

// The tanh the emulated kernels call, for the NumPy model of their gelu and tanh.
extern "C" void emu_tanhf(const float* in, float* out, long long n) { for (long long i = 0; i < n; ++i) out[i] = gpudense_tanh(in[i]); }
extern "C" void emu_tanh(const double* in, double* out, long long n) { for (long long i = 0; i < n; ++i) out[i] = gpudense_tanh(in[i]); }
"""



class HostBuildUnavailable(Exception):
    """g++ is missing or lacks what the harness needs (C++20 <barrier>, _Float16); the message says which."""


def build_host_kernels(work: Path):
    """Every kernels/*.cu of the loader, compiled as host C++ into one library with HARNESS; a ``ctypes.CDLL``.

    Raises:
        HostBuildUnavailable: no usable g++ (the caller skips, saying why).
        AssertionError: the kernels do not compile as host C++ (the message holds g++'s output).
    """
    import ctypes

    if GXX is None:
        raise HostBuildUnavailable("g++ is not installed: the host emulation of the kernels needs it")
    includes = "\n".join(f'#include "{(KERNELS_DIR / name).as_posix()}"' for name in KERNEL_FILES)
    code = HARNESS.replace("KERNEL_INCLUDES", includes).replace("LAUNCHERS", launchers())
    (work / "harness.cpp").write_text(code, encoding="utf-8")
    lib = work / "libemu.so"
    res = subprocess.run(
        [GXX, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-Wno-unknown-pragmas",
         *kernel_defines(), "-o", str(lib), str(work / "harness.cpp")],
        capture_output=True, text=True, timeout=600,
    )
    if res.returncode != 0 and ("barrier" in res.stderr or "_Float16" in res.stderr):
        raise HostBuildUnavailable(f"g++ lacks C++20 <barrier> or _Float16: {res.stderr[:300]}")
    assert res.returncode == 0, f"the kernels do not compile as host C++:\n{res.stderr}"
    return ctypes.CDLL(str(lib))


# --------------------------------------------------------------------------
# The kernels' C signatures, read from the preprocessed .cu files
# --------------------------------------------------------------------------

#: The element types of the kernels' parameter types: the traits' storage type T and
#: accumulator Acc per dtype (kernels/element_types.cuh), and the integer types.
_TRAITS = {"TraitsF64": ("float64", "float64"), "TraitsF32": ("float32", "float32"),
           "TraitsF16": ("float16", "float32"), "TraitsBF16": ("bfloat16", "float32")}
_SCALARS = {"i64": "int64", "long long": "int64", "int": "int32", "unsigned": "uint32", "float": "float32",
            "double": "float64"}


@dataclass(frozen=True)
class Param:
    """One kernel parameter: ``name``, ``pointer`` (else passed by value), ``dtype`` (NumPy's name), ``ctype``."""

    name: str
    pointer: bool
    dtype: str
    ctype: str


def _param(text: str) -> Param:
    words = text.replace("*", " * ").split()
    name = words[-1]
    pointer = "*" in words
    base = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__", "*"))
    if "::" in base:
        traits, member = base.split("::")
        dtype = _TRAITS[traits][0 if member == "T" else 1]
    else:
        dtype = _SCALARS[base]
    return Param(name, pointer, dtype, " ".join(words[:-1]))


@functools.lru_cache(maxsize=1)
def kernel_signatures() -> dict[str, tuple[Param, ...]]:
    """Every entry point of kernels/*.cu and its parameters, from the preprocessed source (g++ -E)."""
    found: dict[str, tuple[Param, ...]] = {}
    for name in KERNEL_FILES:
        res = subprocess.run([GXX or "cpp", "-E", "-P", "-x", "c++", *kernel_defines(), "-D__launch_bounds__(x)=",
                              str(KERNELS_DIR / name)], capture_output=True, text=True, timeout=120, check=True)
        for m in re.finditer(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', res.stdout):
            found[m.group(1)] = tuple(_param(p) for p in m.group(2).split(","))
    return found


def launchers() -> str:
    """C++ for ``launch_<entry>(void** args, gx, gy, bx, by)``: the entry point run on the host, as a launch."""
    out = []
    for name, params in kernel_signatures().items():
        unpack = " ".join(f"{p.ctype} p{i} = *({p.ctype}*)a[{i}];" for i, p in enumerate(params))
        call = ", ".join(f"p{i}" for i in range(len(params)))
        out.append(f'extern "C" void launch_{name}(void** a, unsigned gx, unsigned gy, unsigned bx, unsigned by) '
                   f"{{ {unpack} launch(dim3{{gx, gy, 1}}, dim3{{bx, by, 1}}, [=] {{ {name}({call}); }}); }}")
    return "\n".join(out)


# --------------------------------------------------------------------------
# The optimizer kernels' bodies on the host
# --------------------------------------------------------------------------

#: The host build's stand-in for kernels/optim_update.cuh: each operation rounded on its own
#: (g++ with -ffp-contract=off), as the PTX of the device preamble does.
HOST_PREAMBLE = r"""
#include <cmath>
#include <cstring>
inline float mul_rn(float a, float b) { return a * b; }
inline float add_rn(float a, float b) { return a + b; }
inline float sub_rn(float a, float b) { return a - b; }
inline float div_rn(float a, float b) { return a / b; }
inline float sqrt_rn(float a) { return std::sqrt(a); }
inline float abs_of(float a) { return std::fabs(a); }
inline double mul_rn(double a, double b) { return a * b; }
inline double add_rn(double a, double b) { return a + b; }
inline double sub_rn(double a, double b) { return a - b; }
inline double div_rn(double a, double b) { return a / b; }
inline double sqrt_rn(double a) { return std::sqrt(a); }
inline double abs_of(double a) { return std::fabs(a); }
"""


def elementwise_params(text: str) -> list[tuple[str, str]]:
    """``[(type, name), ...]`` of an ElementwiseKernel parameter list such as ``"T w, int32 l2"``."""
    return [tuple(p.split()) for p in text.split(",")]


def elementwise_wrapper(in_params: str, out_params: str, operation: str, name: str, t: str, g: str, p: str, *,
                        device: bool, preamble: str = "") -> str:
    """C++ source running an ElementwiseKernel body once per element, its arrays and scalars as arguments.

    ``t``, ``g``, ``p``: the C types bound to the type names ``T``, ``G`` and ``P``.
    """
    types = {"T": t, "G": g, "P": p, "int32": "int"}
    args, binds = ["long n"], []
    for kind, pname in elementwise_params(in_params):
        if pname == "g":
            args.append(f"const {types[kind]}* arr_g")
            binds.append(f"const {types[kind]} g = arr_g[i];")
        else:
            args.append(f"{types[kind]} {pname}")
    for kind, pname in elementwise_params(out_params):
        args.append(f"{types[kind]}* arr_{pname}")
        binds.append(f"{types[kind]}& {pname} = arr_{pname}[i];")
    head = f"typedef {t} T; typedef {g} G; typedef {p} P;\n"
    body = "\n".join(binds) + "\n" + operation
    if device:
        return ("#include <cuda_fp16.h>\n" + head + preamble
                + f'extern "C" __global__ void {name}({", ".join(args)}) {{\n'
                "long i = blockIdx.x * (long)blockDim.x + threadIdx.x;\nif (i >= n) return;\n"
                + body + "\n}\n")
    return (head + HOST_PREAMBLE + f'extern "C" void {name}({", ".join(args)}) {{\n'
            "for (long i = 0; i < n; ++i) {\n" + body + "\n}\n}\n")


def build_host_elementwise(work: Path, in_params: str, out_params: str, operation: str, name: str, t: str, g: str,
                           p: str):
    """The ElementwiseKernel body compiled for the host (g++); its entry point ``name`` as a ctypes function."""
    import ctypes
    import hashlib

    if GXX is None:
        raise HostBuildUnavailable("g++ is not installed: the host run of the optimizer kernels needs it")
    src = elementwise_wrapper(in_params, out_params, operation, name, t, g, p, device=False)
    key = hashlib.sha256(src.encode()).hexdigest()[:16]
    lib = work / f"{name}_{key}.so"
    if not lib.exists():
        (work / f"{name}_{key}.cpp").write_text(src)
        res = subprocess.run([GXX, "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-o", str(lib),
                              str(work / f"{name}_{key}.cpp")], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    return getattr(ctypes.CDLL(str(lib)), name)
