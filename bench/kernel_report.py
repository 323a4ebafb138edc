"""The kernels as the device built them: registers, local and shared memory, blocks per SM, build time (JSON).

    PYTHONPATH=$PWD python3 bench/kernel_report.py --out kernels.json

Every ``kernels/*.cu`` file is compiled by ``cupy.RawModule`` with NVRTC and
the options gpudense's loader gives (:data:`gpudense.backends.cuda.loader.NVRTC_OPTIONS`),
on device 0, and timed. Its entry points are found in the source
(:func:`entry_points`: ``extern "C" __global__`` functions, written out or
made by a macro), not taken from a list, so a new file or kernel is
reported too. For each: CuPy's ``RawKernel`` attributes (``num_regs``,
``local_size_bytes``, ``shared_size_bytes``, ``const_size_bytes``,
``max_threads_per_block``, ``ptx_version``, ``binary_version``), the
resident blocks per SM at gpudense's block size from the driver
(``cuOccupancyMaxActiveBlocksPerMultiprocessor``) and from gpudense's own
plan (:func:`gpudense.backends.cuda.plan.blocks_per_sm`, which the launches
use), which should agree. Then the time of the CuPy backend's first
``bias_grad`` call (its own module build included). The file is rewritten
after each kernel file; an entry point that fails is recorded with its error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
KERNEL_DIR = REPO / "kernels"
#: CuPy's RawKernel attributes recorded per entry point.
ATTRIBUTES = ("num_regs", "local_size_bytes", "shared_size_bytes", "const_size_bytes", "max_threads_per_block",
              "ptx_version", "binary_version")

_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)\((?:[^\n]*\\\n)*[^\n]*", re.M)
_GLOBAL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')


def entry_points(source: str) -> list[str]:
    """The ``extern "C" __global__`` functions of a CUDA source, in order, macro-made ones included.

    A macro whose body defines an ``extern "C" __global__`` function makes
    one entry point per use at the start of a line, named by its first
    argument.

    Example:
        >>> src = '''
        ... #define K(NAME, T) extern "C" __global__ void NAME(T* x) { x[0] = 0; }
        ... extern "C" __global__ void __launch_bounds__(256) plain(float* y) {}
        ... K(k_f32, float)
        ... K(k_f64, double)
        ... '''
        >>> entry_points(src)
        ['plain', 'k_f32', 'k_f64']
    """
    makers = [m.group(1) for m in _DEFINE.finditer(source) if _GLOBAL.search(m.group(0).replace("\\\n", " "))]
    body = _DEFINE.sub("", source)
    names = [m.group(1) for m in _GLOBAL.finditer(body)]
    if makers:
        use = re.compile(rf"^[ \t]*(?:{'|'.join(map(re.escape, makers))})\(\s*(\w+)", re.M)
        names += [m.group(1) for m in use.finditer(body)]
    return names


def kernel_files(folder: Path = KERNEL_DIR) -> list[Path]:
    """The ``*.cu`` files of ``folder``, sorted by name.

    Example:
        >>> [p.name for p in kernel_files()][:1] != []
        True
    """
    return sorted(folder.glob("*.cu"))


def build_options() -> tuple[str, ...]:
    """The NVRTC options gpudense's loader compiles its kernels with."""
    from gpudense.backends.cuda import loader

    options = getattr(loader, "NVRTC_OPTIONS", None)
    return tuple(options) if options is not None else ("--generate-line-info", *loader.kernel_defines())


def describe_kernel(cp: Any, fn: Any, block: int, plan_blocks: Callable[[int], int] | None) -> dict[str, Any]:
    """One entry point's attributes and blocks per SM (driver and plan) at ``block`` threads."""
    row: dict[str, Any] = {name: int(getattr(fn, name)) for name in ATTRIBUTES}
    try:
        row["blocks_per_sm_driver"] = int(cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            fn.kernel.ptr, block, 0))
    except Exception as exc:  # an older CuPy without the driver call: the plan's figure stands
        row["blocks_per_sm_driver"] = f"unavailable: {type(exc).__name__}: {exc}"
    if plan_blocks is not None:
        row["blocks_per_sm_plan"] = int(plan_blocks(row["num_regs"]))
    return row


def report(cp: Any, files: Sequence[Path], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compile each file on the current device, describe its entry points, write ``out`` after each file.

    Returns:
        ``{"device", "block", "options", "files": [{"file", "build_s", "entry_points": {name: row}}],
        "backend_first_bias_grad_s"}``; a file that does not compile has ``"error"`` instead of rows.
    """
    from gpudense.backends.cuda import plan

    attrs = cp.cuda.Device().attributes
    block = int(plan.BLOCK)

    def plan_blocks(regs: int) -> int:
        return plan.blocks_per_sm(regs, regs_per_sm=int(attrs["MaxRegistersPerMultiprocessor"]),
                                  threads_per_sm=int(attrs["MaxThreadsPerMultiProcessor"]))

    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    options = build_options()
    data: dict[str, Any] = {"device": f"{name} (sm_{props['major']}{props['minor']})", "block": block,
                            "multiprocessors": int(attrs["MultiProcessorCount"]), "options": list(options),
                            "files": []}

    def write() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    for path in files:
        source = path.read_text(encoding="utf-8")
        names = entry_points(source)
        entry: dict[str, Any] = {"file": path.name, "entry_points": {}}
        data["files"].append(entry)
        start = time.perf_counter()
        try:
            module = cp.RawModule(code=f'#line 1 "{path.name}"\n{source}',
                                  options=(*options, f"--include-path={path.parent}"))
            functions = {n: module.get_function(n) for n in names}
            for fn in functions.values():  # get_function is lazy: the attributes load the module
                fn.num_regs
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{path.name}: failed to build: {entry['error'].splitlines()[0]}")
            write()
            continue
        entry["build_s"] = time.perf_counter() - start
        for n, fn in functions.items():
            try:
                entry["entry_points"][n] = describe_kernel(cp, fn, block, plan_blocks)
            except Exception as exc:
                entry["entry_points"][n] = {"error": f"{type(exc).__name__}: {exc}"}
        worst = max((r.get("num_regs", 0) for r in entry["entry_points"].values()), default=0)
        spills = [n for n, r in entry["entry_points"].items() if r.get("local_size_bytes")]
        log(f"{path.name}: {len(functions)} entry points built in {entry['build_s']:.1f} s; "
            f"at most {worst} registers; local memory in: {', '.join(spills) or 'none'}")
        write()
    data["backend_first_bias_grad_s"] = first_bias_grad_seconds(cp)
    write()
    return data


def first_bias_grad_seconds(cp: Any) -> float | str:
    """Seconds of the CuPy backend's first ``bias_grad`` (the module build it triggers included)."""
    try:
        from gpudense.backends import get_backend

        backend = get_backend("cupy")
        dy = cp.ones((64, 32), cp.float32)
        start = time.perf_counter()
        backend.bias_grad(dy)
        cp.cuda.Device().synchronize()
        return time.perf_counter() - start
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--kernels", default=str(KERNEL_DIR), help="folder of the .cu files (default: kernels/)")
    args = parser.parse_args(argv)
    import cupy

    data = report(cupy, kernel_files(Path(args.kernels)), Path(args.out))
    failed = [f["file"] for f in data["files"] if "error" in f]
    return 1 if failed or not data["files"] else 0


if __name__ == "__main__":
    sys.exit(main())
