"""Reading compiler reports of the kernel builds (nvcc and NVRTC), shared by tests/cuda."""

from __future__ import annotations

import re


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
