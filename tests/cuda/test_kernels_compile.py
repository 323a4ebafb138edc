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

from kernel_build import HostBuildUnavailable, build_host_kernels, parse_ptxas
from gpudense._checks import float_dtype
from gpudense.backends.cuda.loader import ENTRY_POINTS, KERNEL_FILES, NVRTC_OPTIONS, SUFFIX, KernelCache, kernel_defines

KERNELS = sorted((Path(__file__).resolve().parents[2] / "kernels").glob("*.cu"))
ARCHS = ["sm_80", "sm_90"]
NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if Path(p).is_file()), None
)

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (not on PATH or in /usr/local/cuda/bin)")


def test_the_kernel_files_are_the_loaders():
    assert sorted(p.name for p in KERNELS) == sorted(KERNEL_FILES)


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
    assert sorted(report) == sorted(KERNEL_FILES[path.name]), report


def _ptx_entries(text):
    """``{entry name: its PTX body}``."""
    parts = re.split(r"\.visible \.entry (\w+)\(", text)
    return dict(zip(parts[1::2], parts[2::2]))


def test_float32_sums_keep_subnormals_under_cupys_ftz_flag(tmp_path):
    """CuPy builds RawModules with -ftz=true; the kernels' own float32 arithmetic must not flush.

    The sums and the relu kernels contain no flushing operation at all (a NaN
    test is unaffected by flushing). The tanh and gelu kernels call tanhf, whose
    own code follows -ftz; their own additions and products are add.rn/mul.rn.
    """
    entries = {}
    for path in KERNELS:
        ptx = tmp_path / f"{path.stem}.ptx"
        res = subprocess.run([NVCC, "-ptx", "-arch=sm_90", "-ftz=true", *kernel_defines(), "-o", str(ptx), str(path)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        text = ptx.read_text()
        assert "add.rn.f32" in text, path.name
        entries.update(_ptx_entries(text))
    assert sorted(entries) == sorted(ENTRY_POINTS)
    for name, body in entries.items():
        if "tanh" in name or "gelu" in name:
            assert "add.rn.f32" in body or "mul.rn.f32" in body or "f64" in name, name
            continue
        flushing = set(re.findall(r"\b[a-z]+(?:\.[a-z0-9]+)*\.ftz\b[.a-z0-9]*", body))
        flushing -= {"setp.nan.ftz.f32", "setp.num.ftz.f32"}
        assert not flushing, f"{name} flushes subnormals: {sorted(flushing)}"


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
    """The kernels mirror none of the plan's constants: leave one out and nvcc says which."""
    path = next(p for p in KERNELS if p.name == "act_bias_grad.cu")  # the file that uses all of them
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


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    try:
        return build_host_kernels(tmp_path_factory.mktemp("emu"))
    except HostBuildUnavailable as exc:
        pytest.skip(str(exc))


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
    (129, 67, "bfloat16", 5, 5, 2, False),  # bfloat16: 8 per 16-byte load, head and tail
    (2300, 5, "bfloat16", 3, 3, 2, True),
    (300, 40, "bfloat16", 0, 0, 3, False),
]


@pytest.mark.parametrize("batch, m, dtype, offset, pad, n_sm, accumulate", EMU_CASES)
def test_kernel_source_run_on_the_host_matches_the_emulation(emulated, batch, m, dtype, offset, pad, n_sm,
                                                             accumulate):
    import ctypes

    import numpy as np

    from gpudense.backends.cuda import bias_grad_plan
    from kernel_emulation import emulate_bias_grad

    rng = np.random.default_rng(batch * 1000 + m)
    t = float_dtype(dtype)
    acc = np.dtype(np.float64 if t == np.float64 else np.float32)
    suffix = SUFFIX[dtype]
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


def _host_tanh(lib):
    """The tanh the host-compiled kernels call, as a function of a NumPy array (float32 or float64)."""
    import ctypes

    import numpy as np

    def tanh(u):
        u = np.ascontiguousarray(u)
        out = np.empty_like(u)
        fn = lib.emu_tanhf if u.dtype == np.float32 else lib.emu_tanh
        fn(ctypes.c_void_p(u.ctypes.data), ctypes.c_void_p(out.ctypes.data), ctypes.c_longlong(u.size))
        return out

    return tanh


def _aligned_buffer(n, t, fill=float("nan")):
    """``n`` elements of dtype ``t`` starting at a 16-byte boundary, filled with ``fill``."""
    import numpy as np

    raw = np.full(n + 16, fill, t)
    shift = (-raw.ctypes.data % 16) // t.itemsize
    return raw[shift : shift + n]


ACT_CASES = [
    # batch, m, dtype, element offset shared by dy, saved and dz (16-byte units aside), n_sm, accumulate
    (1, 1, "float32", 0, 2, False),
    (0, 6, "float16", 0, 2, True),
    (37, 13, "float32", 0, 2, False),  # 52-byte rows: element path
    (64, 8, "float32", 0, 2, True),  # vector path, one chunk
    (300, 40, "float32", 3, 2, False),  # head of 3 on all three arrays
    (129, 24, "float16", 0, 2, True),
    (2100, 4, "float32", 0, 2, False),  # several chunks: pass 2
    (1030, 16, "bfloat16", 0, 3, True),
    (90, 21, "bfloat16", 5, 2, False),
    (64, 24, "bfloat16", 3, 2, True),  # vector path with a head of 3
    (200, 17, "float64", 1, 2, False),
    (4200, 2, "float64", 0, 1, True),
]


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("batch, m, dtype, offset, n_sm, accumulate", ACT_CASES)
def test_fused_activation_gradient_on_the_host_matches_the_formula_and_the_sum_order(
        emulated, activation, batch, m, dtype, offset, n_sm, accumulate):
    """act_bias_grad_*: dy and saved each read once, dz exactly the element-wise formula, db bit-exact.

    dz is compared with activation_math.activation_grad (the formula the NumPy
    path and the blocks use), given the host build's own tanh; db with
    emulate_bias_grad of that dz under the kernel's plan.
    """
    import ctypes

    import numpy as np

    from gpudense.activation_math import activation_forward
    from gpudense.backends.cuda import bias_grad_plan
    from kernel_emulation import emulate_act_bias_grad

    rng = np.random.default_rng(batch * 31 + m)
    t = float_dtype(dtype)
    acc = np.dtype(np.float64 if t == np.float64 else np.float32)
    tanh = _host_tanh(emulated)
    z = (3 * rng.standard_normal((batch, m))).astype(t)
    z[::7, ::3] = 0  # relu's kink and gelu's centre
    _, saved = activation_forward(np, activation, z.copy(), overwrite=True, tanh=tanh)
    dy = rng.standard_normal((batch, m)).astype(t)
    size = offset + max(batch, 1) * m + 32
    # dy and saved in one buffer (the read counter covers both), 16-byte aligned regions.
    region = -(-size // (16 // t.itemsize)) * (16 // t.itemsize)
    mem = _aligned_buffer(2 * region, t)
    mem[offset : offset + batch * m] = dy.ravel()
    mem[region + offset : region + offset + batch * m] = saved.ravel()
    dz_mem = _aligned_buffer(size, t)
    plan = bias_grad_plan(batch, m, itemsize=t.itemsize, ld=m, ptr=offset * t.itemsize, n_sm=n_sm)
    old = rng.standard_normal(m).astype(t)
    out = old.copy() if accumulate else np.full(m, np.nan, t)
    ws = np.full(plan.workspace_shape, np.nan, acc) if not plan.final_in_pass1 else out
    counts = np.zeros(mem.size, np.int32)
    emulated.emu_set_bounds(ctypes.c_size_t(mem.ctypes.data), ctypes.c_size_t(mem.ctypes.data + mem.nbytes),
                            ctypes.c_size_t(t.itemsize), ctypes.c_void_p(counts.ctypes.data))
    ll, i, u, p = ctypes.c_longlong, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
    elem = t.itemsize
    getattr(emulated, f"emu_act_{activation}_{SUFFIX[dtype]}")(
        p(mem.ctypes.data + offset * elem), p(mem.ctypes.data + (region + offset) * elem),
        p(dz_mem.ctypes.data + offset * elem), ll(batch), ll(m), ll(m), ll(plan.chunk_rows), i(plan.head),
        i(plan.vec_path), p(ws.ctypes.data), p(out.ctypes.data), i(plan.final_in_pass1), i(accumulate),
        u(plan.grid1[0]), u(plan.grid1[1]), u(plan.block1[0]), u(plan.block1[1]),
    )
    if not plan.final_in_pass1:
        getattr(emulated, f"emu_pass2_{SUFFIX[dtype]}")(
            p(ws.ctypes.data), ll(plan.n_chunks), ll(m), p(out.ctypes.data), i(accumulate),
            u(plan.grid2[0]), u(plan.block2[0]), u(plan.block2[1]),
        )
    emulated.emu_bad_reads.restype = emulated.emu_misaligned.restype = ctypes.c_longlong
    assert emulated.emu_bad_reads() == 0, "reads outside dy and saved"
    assert emulated.emu_misaligned() == 0, "misaligned 16-byte loads"
    expected = np.zeros(mem.size, np.int32)
    expected[offset : offset + batch * m] = 1
    expected[region + offset : region + offset + batch * m] = 1
    assert (counts == expected).all(), "each element of dy and saved read once, nothing else"
    got_dz = dz_mem[offset : offset + batch * m].reshape(batch, m)
    want_dz, want_db = emulate_act_bias_grad(dy, saved, activation, plan, old, accumulate=accumulate, tanh=tanh)
    np.testing.assert_array_equal(got_dz.view(np.uint8), want_dz.view(np.uint8))
    assert np.isnan(dz_mem[:offset]).all() and np.isnan(dz_mem[offset + batch * m :]).all(), "dz written out of place"
    np.testing.assert_array_equal(out.view(np.uint8), want_db.view(np.uint8))


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("batch, m, dtype, bias", [
    (3, 8, "float32", True), (5, 7, "float32", True), (33, 16, "float16", False), (9, 24, "bfloat16", True),
    (6, 5, "bfloat16", True), (40, 6, "float64", True), (0, 4, "float32", True), (1, 1, "float16", True),
])
def test_forward_bias_and_activation_on_the_host_match_the_formula(emulated, activation, batch, m, dtype, bias):
    """bias_act_*: y = act(z + b) as activation_math computes it (z + b and act in the accumulator type)."""
    import ctypes

    import numpy as np

    from kernel_emulation import emulate_bias_act
    from gpudense.backends.cuda.plan import VECTOR_BYTES

    rng = np.random.default_rng(batch + 100 * m)
    t = float_dtype(dtype)
    tanh = _host_tanh(emulated)
    z = (4 * rng.standard_normal((batch, m))).astype(t)
    z.flat[::5] = 0.0  # relu's kink
    z.flat[1::7] = 30.0  # beyond gelu's clip: t is exactly 1
    z.flat[2::7] = -30.0
    b = rng.standard_normal(m).astype(t) if bias else None
    zz = _aligned_buffer(max(z.size, 1), t)
    zz[: z.size] = z.ravel()
    yy = zz if activation != "gelu" else _aligned_buffer(max(z.size, 1), t)
    bb = _aligned_buffer(m, t)
    if bias:
        bb[:] = b
    vec = 1 if (m * t.itemsize) % VECTOR_BYTES else VECTOR_BYTES // t.itemsize
    n = z.size
    grid = max(1, min(-(-(n // vec) // 256), 3))  # few blocks: the grid-stride loop goes round
    p, ll, i, u = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_uint
    getattr(emulated, f"emu_fwd_{activation}_{SUFFIX[dtype]}")(
        p(zz.ctypes.data), p(bb.ctypes.data), p(yy.ctypes.data), ll(n), ll(m), i(bias), i(vec > 1),
        i(activation == "gelu"), u(grid), u(256))
    want_y, want_saved = emulate_bias_act(z, b, activation, tanh=tanh)
    np.testing.assert_array_equal(yy[:n].reshape(batch, m).view(np.uint8), want_y.view(np.uint8))
    np.testing.assert_array_equal(zz[:n].reshape(batch, m).view(np.uint8), want_saved.view(np.uint8))


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
ACT_SIG = ["ptr", "ptr", *PASS1_SIG]  # dy, saved, dz, then pass 1's
FWD_SIG = ["ptr", "ptr", "ptr", "i64", "i64", "i32", "i32", "i32"]


def _signature(kernel):
    """The argument kinds of a kernel, by its name."""
    for prefix, sig in (("bias_grad_pass1_", PASS1_SIG), ("bias_grad_pass2_", PASS2_SIG),
                        ("act_bias_grad_", ACT_SIG), ("bias_act_", FWD_SIG)):
        if kernel.startswith(prefix):
            return sig
    raise AssertionError(f"unknown kernel {kernel}")


def _emu_name(kernel):
    """The host-emulated entry point of a kernel name: emu_pass1_f32, emu_act_relu_f16, emu_fwd_gelu_bf16."""
    for prefix, emu in (("bias_grad_", "emu_"), ("act_bias_grad_", "emu_act_"), ("bias_act_", "emu_fwd_")):
        if kernel.startswith(prefix):
            return emu + kernel[len(prefix):]
    raise AssertionError(f"unknown kernel {kernel}")


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

    def copy(self):
        """cupy.ndarray.copy: a new C-contiguous allocation at a 16-byte boundary (CuPy's pool: 512)."""
        new = _aligned_buffer(max(self.arr.size, 1), self.dtype)[: self.arr.size].reshape(self.shape)
        new[...] = self.arr
        return _FakeArray(new)


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
        if a is None:  # CuPy passes None as a null pointer
            return "ptr", ctypes.c_void_p(0)
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
            sig = _signature(self.name)
            assert list(kinds) == sig, f"{self.name} called with {kinds}, signature {sig}"
            assert block[0] * block[1] == 256 and block[2] == 1 and grid[2] == 1
            emu = getattr(lib, _emu_name(self.name))
            ui = ctypes.c_uint
            if self.name.startswith("bias_act_"):
                z, b, y = args[:3]
                assert z.flags.c_contiguous and y.flags.c_contiguous and b.flags.c_contiguous
                assert z.data.ptr % 16 == 0 and y.data.ptr % 16 == 0 and b.data.ptr % 16 == 0
                emu(*cargs, ui(grid[0]), ui(block[0]))
                launches.append((self.name, None, None))
            elif self.name.startswith("act_bias_grad_"):
                dy, saved, dz = args[:3]
                for a in (dy, saved, dz):  # the launch code hands over one shared layout
                    assert a.flags.c_contiguous and a.data.ptr % 16 == 0, "dy, saved, dz: C-contiguous, aligned"
                # dy and saved side by side in one buffer, so the read counter sees both.
                n = dy.arr.size
                region = -(-max(n, 1) // 8) * 8
                both = np.full(2 * region + 8, np.nan, dy.dtype)
                shift = (-both.ctypes.data % 16) // both.itemsize
                both = both[shift : shift + 2 * region]
                both[:n] = dy.arr.ravel()
                both[region : region + n] = saved.arr.ravel()
                counts = np.zeros(both.size, np.int32)
                lib.emu_set_bounds(ctypes.c_size_t(both.ctypes.data),
                                   ctypes.c_size_t(both.ctypes.data + both.nbytes),
                                   ctypes.c_size_t(both.itemsize), ctypes.c_void_p(counts.ctypes.data))
                cargs = (ctypes.c_void_p(both.ctypes.data),
                         ctypes.c_void_p(both.ctypes.data + region * both.itemsize), *cargs[2:])
                emu(*cargs, ui(grid[0]), ui(grid[1]), ui(block[0]), ui(block[1]))
                lib.emu_bad_reads.restype = lib.emu_misaligned.restype = ctypes.c_longlong
                assert lib.emu_bad_reads() == 0 and lib.emu_misaligned() == 0
                want = np.zeros(both.size, np.int32)
                want[:n] = want[region : region + n] = 1
                assert (counts == want).all(), "each element of dy and saved read once, nothing else"
                launches.append((self.name, counts, dy))
            elif "pass1" in self.name:
                dy = args[0]
                buf = dy.buffer
                counts = np.zeros(buf.size, np.int32)
                lib.emu_set_bounds(ctypes.c_size_t(buf.ctypes.data), ctypes.c_size_t(buf.ctypes.data + buf.nbytes),
                                   ctypes.c_size_t(buf.itemsize), ctypes.c_void_p(counts.ctypes.data))
                emu(*cargs, ui(grid[0]), ui(grid[1]), ui(block[0]), ui(block[1]))
                lib.emu_bad_reads.restype = lib.emu_misaligned.restype = ctypes.c_longlong
                assert lib.emu_bad_reads() == 0, "dY reads outside its allocation"
                assert lib.emu_misaligned() == 0, "16-byte loads at addresses that are not 16-byte aligned"
                launches.append((self.name, counts, dy))
            else:
                emu(*cargs, ui(grid[0]), ui(block[0]), ui(block[1]))
                launches.append((self.name, None, None))

    class Module:
        def __init__(self, code, options=()):
            assert code.startswith('#line 1 "') and "#include" not in code
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

    from gpudense.backends.cuda import CupyBackend
    from kernel_emulation import emulate_bias_grad

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


ACT_GLUE_CASES = [
    # batch, m, dtype, dy's layout, accumulate, bias
    (300, 40, "float32", "contiguous", False, True),
    (300, 40, "float32", "misaligned", True, True),  # dy copied to a 16-byte boundary
    (77, 9, "float16", "strided", False, True),  # every other row: copied
    (2100, 4, "bfloat16", "contiguous", True, True),  # split: pass 2
    (50, 6, "float64", "contiguous", False, False),  # no bias: db not returned
    (0, 4, "float32", "contiguous", True, True),
]


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("batch, m, dtype, layout, accumulate, bias", ACT_GLUE_CASES)
def test_cupy_backend_fused_launches_on_emulated_kernels(emulated, activation, batch, m, dtype, layout,
                                                         accumulate, bias):
    """CupyBackend.bias_act and act_bias_grad drive the host-compiled kernels: arguments, layouts, results."""
    import numpy as np

    from gpudense.backends.cuda import CupyBackend, bias_grad_plan, blocks_per_sm
    from kernel_emulation import emulate_act_bias_grad, emulate_bias_act

    rng = np.random.default_rng(batch + 3 * m)
    t = float_dtype(dtype)
    tanh = _host_tanh(emulated)
    launches = []
    backend = CupyBackend.__new__(CupyBackend)
    backend.xp = _fake_cupy(emulated, launches)
    backend._kernels = KernelCache()
    # Forward: the product z (fresh, aligned) and b.
    z = (2 * rng.standard_normal((batch, m))).astype(t)
    b = rng.standard_normal(m).astype(t)
    zf = _aligned_buffer(max(z.size, 1), t)[: z.size].reshape(batch, m)
    zf[...] = z
    bf = _aligned_buffer(m, t)
    bf[...] = b
    y, saved = backend.bias_act(_FakeArray(zf), _FakeArray(bf), activation)
    want_y, want_saved = emulate_bias_act(z, b, activation, tanh=tanh)
    np.testing.assert_array_equal(y.arr.view(np.uint8), want_y.view(np.uint8))
    np.testing.assert_array_equal(saved.arr.view(np.uint8), want_saved.view(np.uint8))
    assert (saved is y) == (activation != "gelu")
    # Backward: dy in the given layout.
    dy = rng.standard_normal((batch, m)).astype(t)
    if layout == "contiguous":
        dyf = _aligned_buffer(max(dy.size, 1), t)[: dy.size].reshape(batch, m)
        dyf[...] = dy
        dy_arg = _FakeArray(dyf)
    elif layout == "misaligned":
        mem = _aligned_buffer(dy.size + 1, t)
        mem[1:] = dy.ravel()
        dy_arg = _FakeArray(mem[1:].reshape(batch, m), mem)
    else:
        mem = _aligned_buffer(2 * dy.size + 2 * m, t)
        view = mem[: 2 * batch * m].reshape(2 * batch, m)[::2]
        view[...] = dy
        dy_arg = _FakeArray(view, mem)
    old = rng.standard_normal(m).astype(t)
    out = _FakeArray(old.copy()) if accumulate else None
    launches.clear()
    dz, db = backend.act_bias_grad(dy_arg, saved, activation, out, accumulate=accumulate, bias=bias)
    name = f"act_bias_grad_{activation}_{SUFFIX[dtype]}"
    assert [n for n, _, _ in launches][:1] == ([name] if m else [])
    plan = bias_grad_plan(batch, m, itemsize=t.itemsize, ld=m, ptr=0, n_sm=3,
                          blocks_per_sm=blocks_per_sm(64, regs_per_sm=65536, threads_per_sm=2048))
    assert len(launches) == (1 if plan.final_in_pass1 else 2)
    want_dz, want_db = emulate_act_bias_grad(dy, want_saved, activation, plan, old,
                                             accumulate=accumulate and bias, tanh=tanh)
    np.testing.assert_array_equal(dz.arr.view(np.uint8), want_dz.view(np.uint8))
    if bias:
        assert db is not None and (out is None or db is out)
        np.testing.assert_array_equal(db.arr.view(np.uint8), want_db.view(np.uint8))
    else:
        assert db is None
