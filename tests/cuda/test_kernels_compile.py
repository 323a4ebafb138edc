"""Every kernels/*.cu compiles with nvcc for sm_80 and sm_90, with no register spill.

Runs in CI, where there is no GPU but nvcc is installed; skipped (with the
reason) only where nvcc is absent. Every build passes the launch plan's
constants as the ``-D`` options of ``kernel_defines()``, as NVRTC gets them;
without one, the file stops with ``#error``. ``-Xptxas -v`` reports, per
entry point, registers, stack frame and spill bytes; any spill or stack frame
fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpudense.backends.cuda.loader import ENTRY_POINTS, NVRTC_OPTIONS, KernelCache, kernel_defines

KERNELS = sorted((Path(__file__).resolve().parents[2] / "kernels").glob("*.cu"))
ARCHS = ["sm_80", "sm_90"]
NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if Path(p).is_file()), None
)

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (not on PATH or in /usr/local/cuda/bin)")


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


def test_there_are_kernels():
    assert "bias_grad.cu" in [p.name for p in KERNELS]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("path", KERNELS, ids=[p.name for p in KERNELS])
def test_kernel_compiles_without_spills(tmp_path, path, arch):
    res = subprocess.run(
        [NVCC, "-cubin", f"-arch={arch}", "-Xptxas", "-v", *kernel_defines(), "-o", str(tmp_path / "k.cubin"),
         str(path)],
        capture_output=True, text=True, timeout=300,
    )
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"nvcc failed on {path.name} for {arch}:\n{log}"
    report = parse_ptxas(log)
    assert report, f"no entry function reported for {path.name}:\n{log}"
    bad = {n: r for n, r in report.items() if r["spill_stores"] or r["spill_loads"] or r["stack"]}
    assert not bad, f"{path.name} ({arch}) spills or uses a stack frame: {bad}"
    if path.name == "bias_grad.cu":
        assert sorted(report) == sorted(ENTRY_POINTS), report


def test_float32_sums_keep_subnormals_under_cupys_ftz_flag(tmp_path):
    """CuPy builds RawModules with -ftz=true; the kernel's float32 additions must not flush."""
    path = next(p for p in KERNELS if p.name == "bias_grad.cu")
    ptx = tmp_path / "k.ptx"
    res = subprocess.run([NVCC, "-ptx", "-arch=sm_90", "-ftz=true", *kernel_defines(), "-o", str(ptx), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    text = ptx.read_text()
    assert "add.rn.f32" in text
    assert "add.ftz" not in text and "add.rn.ftz" not in text


def test_parse_ptxas_reads_spills():
    log = (
        "ptxas info    : Compiling entry function 'k' for 'sm_90'\n"
        "ptxas info    : Function properties for k\n"
        "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers\n"
    )
    assert parse_ptxas(log) == {"k": {"registers": 255, "stack": 8, "spill_stores": 4, "spill_loads": 4}}


@pytest.mark.parametrize("missing", range(len(kernel_defines())), ids=lambda i: kernel_defines()[i].split("=")[0])
def test_a_missing_define_stops_the_build_naming_it(tmp_path, missing):
    """The kernel mirrors none of the plan's constants: leave one out and nvcc says which."""
    path = next(p for p in KERNELS if p.name == "bias_grad.cu")
    defines = list(kernel_defines())
    name = defines.pop(missing)[2:].split("=")[0]
    res = subprocess.run([NVCC, "-E", *defines, "-o", str(tmp_path / "k.ii"), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert f"#error \"{name} is not defined" in res.stdout + res.stderr


def test_a_vector_width_other_than_the_vector_types_is_refused(tmp_path):
    path = next(p for p in KERNELS if p.name == "bias_grad.cu")
    defines = [d if not d.startswith("-DGPUDENSE_VECTOR_BYTES=") else "-DGPUDENSE_VECTOR_BYTES=8"
               for d in kernel_defines()]
    res = subprocess.run([NVCC, "-ptx", "-arch=sm_90", *defines, "-o", str(tmp_path / "k.ptx"), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "GPUDENSE_VECTOR_BYTES must be the size of" in res.stdout + res.stderr


# --------------------------------------------------------------------------
# Host emulation: the .cu file itself, compiled with g++ and run thread by thread
# --------------------------------------------------------------------------
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
    if (a < g_lo || a + sizeof(T) > g_hi) { g_bad_reads++; T z; std::memset(&z, 0, sizeof z); return z; }
    if (sizeof(T) == 16 && a % 16 != 0) g_misaligned++;
    for (uintptr_t k = 0; k < sizeof(T) / g_item; ++k)
        std::atomic_ref<int>(g_counts[(a - g_lo) / g_item + k]).fetch_add(1);
    T v; std::memcpy(&v, p, sizeof v); return v;
}

static inline float gpudense_h2f(unsigned short h) { _Float16 v; std::memcpy(&v, &h, 2); return (float)v; }
static inline unsigned short gpudense_f2h(float f) { _Float16 v = (_Float16)f; unsigned short h; std::memcpy(&h, &v, 2); return h; }

#define GPUDENSE_HOST_EMULATION 1
#include KERNEL_PATH

template <class F> static void launch(dim3 grid, dim3 block, F body) {
    gridDim = grid; blockDim = block;
    for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            blockIdx = dim3{bx, by, 1};
            std::barrier<> bar(block.x * block.y);
            g_barrier = &bar;
            std::vector<std::thread> ts;
            for (unsigned ty = 0; ty < block.y; ++ty)
                for (unsigned tx = 0; tx < block.x; ++tx)
                    ts.emplace_back([=] { threadIdx = dim3{tx, ty, 1}; body(); });
            for (auto& t : ts) t.join();
        }
    }
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
"""

GXX = shutil.which("g++")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    import ctypes

    if GXX is None:
        pytest.skip("g++ is not installed: the host emulation of the kernel needs it")
    kernel = next(p for p in KERNELS if p.name == "bias_grad.cu")
    work = tmp_path_factory.mktemp("emu")
    (work / "harness.cpp").write_text(HARNESS, encoding="utf-8")
    lib = work / "libemu.so"
    res = subprocess.run(
        [GXX, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-Wno-unknown-pragmas",
         *kernel_defines(), f'-DKERNEL_PATH="{kernel}"', "-o", str(lib), str(work / "harness.cpp")],
        capture_output=True, text=True, timeout=300,
    )
    if res.returncode != 0 and ("barrier" in res.stderr or "_Float16" in res.stderr):
        pytest.skip(f"g++ lacks C++20 <barrier> or _Float16: {res.stderr[:300]}")
    assert res.returncode == 0, f"the kernel does not compile as host C++:\n{res.stderr}"
    return ctypes.CDLL(str(lib))


EMU_CASES = [
    # batch, m, dtype, element offset of dY[0, 0], row padding (elements), n_sm, accumulate
    (1, 1, "float32", 0, 0, 2, False),
    (0, 6, "float16", 0, 0, 2, False),
    (5, 3, "float64", 1, 0, 2, True),
    (37, 13, "float32", 1, 3, 2, False),  # misaligned base, aligned pitch: vector path with a head
    (33, 35, "float32", 0, 0, 3, True),  # pitch 140 bytes: element path
    (300, 40, "float32", 3, 4, 2, False),
    (129, 67, "float16", 5, 5, 2, False),
    (130, 21, "float16", 0, 3, 3, True),
    (200, 17, "float64", 1, 1, 2, False),
    (2100, 1, "float32", 1, 0, 2, False),  # ty = 256, several chunks
    (2300, 5, "float16", 3, 3, 2, True),
    (70, 300, "float32", 2, 2, 1, False),  # several column tiles
    (50, 9, "float32", 0, 3, 2, False),  # vector path, a 1-column tail group
    (40, 7, "float16", 2, 1, 2, True),  # vector path, head and tail in one group
    (60, 11, "float64", 1, 1, 2, False),
]


@pytest.mark.parametrize("batch, m, dtype, offset, pad, n_sm, accumulate", EMU_CASES)
def test_kernel_source_run_on_the_host_matches_the_emulation(emulated, batch, m, dtype, offset, pad, n_sm,
                                                             accumulate):
    import ctypes

    import numpy as np

    from gpudense.backends.cuda import bias_grad_plan, emulate_bias_grad

    rng = np.random.default_rng(batch * 1000 + m)
    t = np.dtype(dtype)
    acc = np.dtype(np.float64 if t == np.float64 else np.float32)
    suffix = {"float64": "f64", "float32": "f32", "float16": "f16"}[dtype]
    ld = m + pad
    values = rng.standard_normal((batch, m)).astype(t)
    # dY inside a NaN-filled buffer that is itself 16-byte aligned: gaps poison any stray read.
    n = offset + max(batch, 1) * ld + 64
    raw = np.full(n + 16, np.nan, t)
    shift = (-raw.ctypes.data % 16) // t.itemsize
    mem = raw[shift : shift + n]
    assert mem.ctypes.data % 16 == 0
    for r in range(batch):
        mem[offset + r * ld : offset + r * ld + m] = values[r]
    base_ptr = mem.ctypes.data + offset * t.itemsize
    plan = bias_grad_plan(batch, m, itemsize=t.itemsize, ld=ld, ptr=base_ptr, n_sm=n_sm)
    old = rng.standard_normal(m).astype(t)
    out = old.copy() if accumulate else np.full(m, np.nan, t)
    ws = np.full(plan.workspace_shape, np.nan, acc) if not plan.final_in_pass1 else out
    counts = np.zeros(mem.size, np.int32)
    emulated.emu_set_bounds(ctypes.c_size_t(mem.ctypes.data), ctypes.c_size_t(mem.ctypes.data + mem.nbytes),
                            ctypes.c_size_t(t.itemsize), ctypes.c_void_p(counts.ctypes.data))
    ll, i, u, p = ctypes.c_longlong, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
    getattr(emulated, f"emu_pass1_{suffix}")(
        p(base_ptr), ll(batch), ll(m), ll(ld), ll(plan.chunk_rows), i(plan.head), i(plan.vec_path),
        p(ws.ctypes.data), p(out.ctypes.data), i(plan.final_in_pass1), i(accumulate),
        u(plan.grid1[0]), u(plan.grid1[1]), u(plan.block1[0]), u(plan.block1[1]),
    )
    if not plan.final_in_pass1:
        assert not np.isnan(ws).any(), "pass 1 left workspace entries unwritten"
        getattr(emulated, f"emu_pass2_{suffix}")(
            p(ws.ctypes.data), ll(plan.n_chunks), ll(m), p(out.ctypes.data), i(accumulate),
            u(plan.grid2[0]), u(plan.block2[0]), u(plan.block2[1]),
        )
    emulated.emu_bad_reads.restype = ctypes.c_longlong
    emulated.emu_misaligned.restype = ctypes.c_longlong
    assert emulated.emu_bad_reads() == 0, "dY reads outside the buffer"
    assert emulated.emu_misaligned() == 0, "misaligned 16-byte loads"
    expected = np.zeros(mem.size, np.int32)
    for r in range(batch):
        expected[offset + r * ld : offset + r * ld + m] = 1
    stray = np.flatnonzero(counts != expected)
    assert stray.size == 0, f"{stray.size} elements read a wrong number of times (each dY element once, no other)"
    assert np.isfinite(out).all(), "db has unwritten columns or read padding"
    want = emulate_bias_grad(values, plan, old, accumulate=accumulate)
    np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8))


# --------------------------------------------------------------------------
# CupyBackend.bias_grad's launch code, driving the host-emulated kernels
# --------------------------------------------------------------------------
#
# A stand-in for the few CuPy calls bias_grad makes (empty, ascontiguousarray,
# RawModule, Device) over NumPy memory. Its kernels check that the arguments
# bias_grad passes have exactly the kernel signature's types, then run the
# host emulation. This tests the Python glue (argument order and types,
# layouts used in place or copied, workspace, accumulate) without a GPU.

PASS1_SIG = ["ptr", "i64", "i64", "i64", "i64", "i32", "i32", "ptr", "ptr", "i32", "i32"]
PASS2_SIG = ["ptr", "i64", "i64", "ptr", "i32"]


class _FakeArray:
    """A NumPy array seen through the attributes bias_grad reads of a cupy.ndarray."""

    def __init__(self, arr, buffer=None):
        import numpy as np

        self.arr = arr
        self.buffer = arr if buffer is None else buffer  # the flat allocation it views
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim
        self.itemsize, self.strides, self.flags = arr.itemsize, arr.strides, arr.flags
        self.data = type("MemoryPointer", (), {"ptr": int(arr.__array_interface__["data"][0])})()
        self.device = _FakeDevice(0)
        assert isinstance(self.buffer, np.ndarray)


class _FakeDevice:
    attributes = {"MultiProcessorCount": 3, "MaxRegistersPerMultiprocessor": 65536,
                  "MaxThreadsPerMultiProcessor": 2048}

    def __init__(self, device_id=0):
        self.id = int(device_id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _fake_cupy(lib, launches):
    import ctypes
    from types import SimpleNamespace

    import numpy as np

    def ctype_of(a):
        if isinstance(a, _FakeArray):
            return "ptr", ctypes.c_void_p(a.data.ptr)
        if type(a) is np.int64:
            return "i64", ctypes.c_longlong(int(a))
        if type(a) is np.int32:
            return "i32", ctypes.c_int(int(a))
        raise AssertionError(f"kernel argument of type {type(a).__name__}: CuPy needs a NumPy scalar or array")

    class Kernel:
        num_regs = 64

        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args):
            kinds, cargs = zip(*(ctype_of(a) for a in args))
            sig = PASS1_SIG if "pass1" in self.name else PASS2_SIG
            assert list(kinds) == sig, f"{self.name} called with {kinds}, signature {sig}"
            assert block[0] * block[1] == 256 and block[2] == 1 and grid[2] == 1
            if "pass1" in self.name:
                dy = args[0]
                buf = dy.buffer
                counts = np.zeros(buf.size, np.int32)
                lib.emu_set_bounds(ctypes.c_size_t(buf.ctypes.data), ctypes.c_size_t(buf.ctypes.data + buf.nbytes),
                                   ctypes.c_size_t(buf.itemsize), ctypes.c_void_p(counts.ctypes.data))
                getattr(lib, "emu_" + self.name[len("bias_grad_"):])(
                    *cargs, ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]), ctypes.c_uint(block[0]),
                    ctypes.c_uint(block[1]))
                lib.emu_bad_reads.restype = lib.emu_misaligned.restype = ctypes.c_longlong
                assert lib.emu_bad_reads() == 0, "dY reads outside its allocation"
                assert lib.emu_misaligned() == 0, "16-byte loads at addresses that are not 16-byte aligned"
                launches.append((self.name, counts, dy))
            else:
                getattr(lib, "emu_" + self.name[len("bias_grad_"):])(
                    *cargs, ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), ctypes.c_uint(block[1]))
                launches.append((self.name, None, None))

    class Module:
        def __init__(self, code, options=()):
            assert code.startswith('#line 1 "') and "bias_grad_pass1_f32" in code
            assert tuple(options) == NVRTC_OPTIONS and set(kernel_defines()) <= set(options), options
            self.options = options

        def get_function(self, name):
            return Kernel(name)

    def empty(shape, dtype):
        a = np.full(shape, np.nan, dtype)  # poisoned: an unwritten element stays NaN
        return _FakeArray(a)

    def ascontiguousarray(a):
        return _FakeArray(np.ascontiguousarray(a.arr))

    return SimpleNamespace(empty=empty, ascontiguousarray=ascontiguousarray, RawModule=Module,
                           cuda=SimpleNamespace(Device=_FakeDevice,
                                                runtime=SimpleNamespace(getDevice=lambda: 0)))


def _strided(mem, offset, shape, strides_elems):
    import numpy as np

    item = mem.itemsize
    return np.lib.stride_tricks.as_strided(mem[offset:], shape=shape,
                                           strides=tuple(s * item for s in strides_elems))


GLUE_CASES = [
    # batch, m, dtype, offset, row stride (elements; None: C order), column stride, accumulate
    (300, 40, "float32", 0, None, 1, False),
    (300, 40, "float32", 1, 45, 1, True),  # misaligned base, padded rows: used in place
    (77, 9, "float16", 3, 16, 1, False),
    (64, 5, "float64", 0, -7, 1, False),  # rows last to first
    (50, 6, "float32", 0, 1, 50, False),  # column-major: copied
    (0, 4, "float16", 0, None, 1, True),
    (1, 3, "float64", 1, None, 1, False),
    (2100, 1, "float32", 2, 3, 1, True),
    (40, 37, "float16", 3, 40, 1, False),  # misaligned base, 80-byte pitch: 16-byte loads after a head
    (60, 30, "float32", 1, 32, 1, True),
]


@pytest.mark.parametrize("batch, m, dtype, offset, ld, cs, accumulate", GLUE_CASES)
def test_cupy_backend_bias_grad_glue_on_emulated_kernels(emulated, batch, m, dtype, offset, ld, cs, accumulate):
    import numpy as np

    from gpudense.backends.cuda import CupyBackend, emulate_bias_grad

    rng = np.random.default_rng(7 + batch + m)
    t = np.dtype(dtype)
    values = rng.standard_normal((batch, m)).astype(t)
    if ld is None:
        ld = m
    span = (max(batch, 1) - 1) * abs(ld) + (m - 1) * cs + 1 if cs == 1 else batch * m
    mem = np.full(offset + span + 64, np.nan, t)
    start = offset + (max(batch, 1) - 1) * abs(ld) if ld < 0 else offset
    view = _strided(mem, start, (batch, m), (ld, cs))
    view[...] = values
    launches = []
    backend = CupyBackend.__new__(CupyBackend)  # no CuPy, no GPU: the stand-in instead
    backend.xp = _fake_cupy(emulated, launches)
    backend._kernels = KernelCache()
    old = rng.standard_normal(m).astype(t)
    out = _FakeArray(old.copy()) if accumulate else None
    got = backend.bias_grad(_FakeArray(view, mem), out, accumulate=accumulate)
    result = got.arr
    name, counts, passed = launches[0]
    copied = passed.buffer is not mem
    assert copied == (cs != 1 and m > 1), "dy copied although the kernel can read it, or the reverse"
    owned = np.zeros(passed.buffer.size, np.int32)
    pv = passed.arr
    off = (pv.__array_interface__["data"][0] - passed.buffer.ctypes.data) // t.itemsize
    _strided(owned, off, pv.shape, tuple(s // t.itemsize for s in pv.strides))[...] = 1
    assert (counts == owned).all(), "each element of dy read once, nothing else"
    assert [n for n, _, _ in launches] == [name] + (["bias_grad_pass2_" + name[-3:]] if len(launches) > 1 else [])
    k = backend.kernels(0)
    from gpudense.backends.cuda import bias_grad_plan

    plan = bias_grad_plan(batch, m, itemsize=t.itemsize, ld=m, ptr=0, n_sm=k.n_sm,
                          blocks_per_sm=k.blocks_per_sm[name])
    assert len(launches) == (1 if plan.final_in_pass1 else 2)
    want = emulate_bias_grad(values, plan, old, accumulate=accumulate)
    np.testing.assert_array_equal(result.view(np.uint8), want.view(np.uint8))
