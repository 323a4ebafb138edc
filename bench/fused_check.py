"""The fused activation-gradient check on a GPU, and cuBLASLt's epilogues as a comparator.

:func:`time_fused` times, per shape, dtype and activation, gpudense's fused
pass (``dz = dy * act'(.)`` and ``db`` in one kernel, then pass 2 when the
batch is split) against the unfused way (the activation's derivative as
CuPy element-wise operations, then the bias-gradient kernel on ``dz``).
:func:`time_epilogues` compares, where ``nvmath-python`` imports, cuBLASLt's
``BGRADB`` (``dw = x.T @ dy`` with ``db`` in the GEMM's epilogue),
``DRELU_BGRAD`` and ``DGELU_BGRAD`` (the next layer's ``dx`` GEMM with the
activation's derivative and ``db`` in its epilogue) with gpudense's GEMM followed by its kernels; without
nvmath the rows are recorded as skipped, with the reason.
:func:`run_fused_check` runs both and writes ``fused_check.json`` after each
shape, so a stopped run keeps what it measured. ``python3 bench/fused_check.py
[--out DIR] [--repeat N] [--quick]`` runs it (``PYTHONPATH=$PWD``, from a plain
checkout); it imports its sibling ``device_check`` (bench/ on the path, as it
is for a script in bench/ and for the tests).

Timing is bench/device_check.py's: CUDA events, warm-up, the methods
alternating in rounds (:func:`~device_check.alternating_ms`), medians and
ratios paired by round, buffers rotating through more than twice the L2. No figure is
asserted anywhere; the GPU run records them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gpudense._checks import float_dtype
from gpudense.benchmark.ceilings import random_normal
from gpudense.benchmark.stats import paired_ratio
from gpudense.benchmark.timing import CudaTimer

from gpudense.cli._common import int_at_least

from device_check import alternating_ms, copy_check, device_facts, result_row, results_table, write_json

#: ``(batch, n_out)`` shapes of ``dy`` for the fused rows.
FUSED_SWEEP = [(65536, 4096), (1048576, 64), (256, 4096)]
FUSED_DTYPES = ("float32", "bfloat16")
FUSED_ACTIVATIONS = ("relu", "gelu", "tanh")
FUSED_METHODS = ("gpudense fused act'+db kernel", "unfused: act' (CuPy ops), then bias_grad")
#: ``(batch, n_in, n_out)`` of the epilogue comparison.
EPILOGUE_SHAPES = [(65536, 1024, 1024), (8192, 4096, 4096)]
EPILOGUE_METHODS = ("gpudense dw GEMM + bias_grad", "cuBLASLt BGRADB (nvmath)",
                    "gpudense dx GEMM + fused relu'+db", "cuBLASLt DRELU_BGRAD (nvmath)",
                    "gpudense dx GEMM + fused gelu'+db", "cuBLASLt DGELU_BGRAD (nvmath)")
#: Each nvmath method and the gpudense method it is compared with.
EPILOGUE_PAIRS = {EPILOGUE_METHODS[1]: EPILOGUE_METHODS[0], EPILOGUE_METHODS[3]: EPILOGUE_METHODS[2],
                  EPILOGUE_METHODS[5]: EPILOGUE_METHODS[4]}


def _buffers(xp: Any, shape: tuple[int, int], dtype: np.dtype, l2_bytes: int, seed: int, n_arrays: int) -> tuple[int, Any]:
    one = shape[0] * shape[1] * dtype.itemsize * n_arrays
    n_buf = max(2, math.ceil(2 * l2_bytes / one) + 1)
    return n_buf, random_normal(xp, xp.random.default_rng(seed), (n_buf, *shape), dtype)


def time_fused(backend: Any, shape: tuple[int, int], dtype: str, activation: str, *, l2_bytes: int,
               copy_gbps: float, repeat: int, seed: int = 0) -> list[dict[str, Any]]:
    """Time the two :data:`FUSED_METHODS` on one shape, dtype and activation; one row each.

    Both rows count the fused pass's own traffic (``dy`` and the saved array
    read, ``dz`` written, ``db`` written), so their GB/s compare as their
    times do. The fused row also holds the largest difference of its ``db``
    from the unfused one, relative to the largest ``|db|``.
    """
    from gpudense.activation_math import activation_forward, activation_grad

    xp = backend.xp
    dt = float_dtype(dtype)
    n_buf, dys = _buffers(xp, shape, dt, l2_bytes, seed, 2)
    saved = [activation_forward(xp, activation, z, overwrite=True)[1] for z in
             random_normal(xp, xp.random.default_rng(seed + 1), (n_buf, *shape), dt)]
    out = xp.empty(shape[1], dt)

    def unfused(i: int) -> Any:
        dz = activation_grad(xp, activation, saved[i % n_buf], dys[i % n_buf])
        return backend.bias_grad(dz, out)

    fused_db = backend.to_numpy(backend.act_bias_grad(dys[0], saved[0], activation)[1]).astype(np.float64)
    plain_db = backend.to_numpy(unfused(0)).astype(np.float64)
    diff = float(np.abs(fused_db - plain_db).max() / max(np.abs(plain_db).max(), 1e-300))
    fns: dict[str, Callable[[int], Any]] = {
        FUSED_METHODS[0]: lambda i: backend.act_bias_grad(dys[i % n_buf], saved[i % n_buf], activation, out),
        FUSED_METHODS[1]: unfused,
    }
    moved = 3 * shape[0] * shape[1] * dt.itemsize + shape[1] * dt.itemsize
    times = alternating_ms(fns, CudaTimer(xp), repeat=repeat)
    fused = times[FUSED_METHODS[0]]
    rows = []
    for method, samples in times.items():
        base = {"method": method, "shape": [int(v) for v in shape], "dtype": dtype, "activation": activation}
        if isinstance(samples, str):
            rows.append({**base, "skipped": samples})
            continue
        extra: dict[str, Any] = {"activation": activation, "buffers": n_buf}
        if method == FUSED_METHODS[0]:
            extra["db_rel_diff_vs_unfused"] = diff
        elif not isinstance(fused, str):
            extra["paired_ratio_vs_kernel"] = paired_ratio(samples, fused)
        rows.append(result_row(method, shape, dtype, times_ms=samples, bytes_moved=moved, copy_gbps=copy_gbps,
                               **extra))
    return rows


def _nvmath() -> tuple[Any, str]:
    """``(nvmath.linalg.advanced, "")``, or ``(None, why it is unavailable)``."""
    try:
        from nvmath.linalg import advanced
    except Exception as exc:  # not installed, or no matching CUDA libraries
        return None, f"nvmath-python is not importable ({type(exc).__name__}: {exc})"
    return advanced, ""


def time_epilogues(backend: Any, dims: tuple[int, int, int], dtype: str, *, repeat: int,
                   seed: int = 0) -> list[dict[str, Any]]:
    """gpudense's GEMM + kernels against cuBLASLt's BGRADB, DRELU_BGRAD and DGELU_BGRAD epilogues (nvmath).

    ``dims = (batch, n_in, n_out)``. BGRADB: ``dw = x.T @ dy`` and ``db``.
    DRELU_BGRAD / DGELU_BGRAD: ``g = dz_next @ w_next.T`` (the next layer's
    ``dx``, here ``w_next`` of shape ``(n_out, n_out)``) then ``dz = g *
    act'(z)`` and ``db``. The methods alternate (:func:`alternating_ms`); one
    row per :data:`EPILOGUE_METHODS`, each nvmath row with
    ``paired_ratio_vs_gpudense`` (its time over gpudense's, paired by round).
    Rows of the nvmath methods carry ``"skipped"`` where nvmath cannot be
    used; an error inside nvmath is recorded the same way.
    """
    from gpudense.activation_math import activation_forward

    xp = backend.xp
    dt = float_dtype(dtype)
    batch, n_in, n_out = dims
    gen = xp.random.default_rng(seed)
    x = random_normal(xp, gen, (batch, n_in), dt)
    dy = random_normal(xp, gen, (batch, n_out), dt)
    w_next = random_normal(xp, gen, (n_out, n_out), dt, 1.0 / math.sqrt(n_out))
    z = random_normal(xp, gen, (batch, n_out), dt)
    saved = {a: activation_forward(xp, a, z.copy(), overwrite=True)[1] for a in ("relu", "gelu")}
    flops_dw, flops_dx = 2 * batch * n_in * n_out, 2 * batch * n_out * n_out

    def ours_dw(i: int) -> Any:
        return backend.matmul(x.T, dy), backend.bias_grad(dy)

    def ours_dx(activation: str) -> Callable[[int], Any]:
        return lambda i: backend.act_bias_grad(backend.matmul(dy, w_next.T), saved[activation], activation)

    fns: dict[str, Callable[[int], Any]] = {EPILOGUE_METHODS[0]: ours_dw, EPILOGUE_METHODS[2]: ours_dx("relu"),
                                            EPILOGUE_METHODS[4]: ours_dx("gelu")}
    skipped: dict[str, str] = {}
    advanced, why = _nvmath()
    if advanced is None:
        skipped = {m: why for m in EPILOGUE_PAIRS}
    else:
        epilog = advanced.MatmulEpilog
        fns[EPILOGUE_METHODS[1]] = lambda i: advanced.matmul(x.T, dy, epilog=epilog.BGRADB)
        for method, act in ((EPILOGUE_METHODS[3], "relu"), (EPILOGUE_METHODS[5], "gelu")):
            try:  # the forward's auxiliary output (relu's mask, gelu's input), as cuBLASLt keeps it
                key = f"{act}_aux"
                _, aux = advanced.matmul(dy, w_next.T, epilog=getattr(epilog, key.upper()))
                backward = getattr(epilog, f"D{act.upper()}_BGRAD")
                fns[method] = (lambda b, a: lambda i: advanced.matmul(dy, w_next.T, epilog=b, epilog_inputs=a))(
                    backward, {key: aux[key]})
            except Exception as exc:  # an nvmath or cuBLASLt version that refuses the epilogue
                skipped[method] = f"nvmath failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    times = alternating_ms(fns, CudaTimer(xp), repeat=repeat)
    rows = []
    for method in EPILOGUE_METHODS:
        base = {"method": method, "shape": [batch, n_in, n_out], "dtype": dtype}
        samples = skipped.get(method) or times[method]
        if isinstance(samples, str):
            rows.append({**base, "skipped": samples})
            continue
        median = sorted(samples)[len(samples) // 2]
        flops = flops_dw if method in EPILOGUE_METHODS[:2] else flops_dx
        row = {**base, "median_ms": median, "times_ms": samples, "repeats": len(samples),
               "tflops": flops / (median * 1e-3) / 1e12}
        ours = times.get(EPILOGUE_PAIRS.get(method, ""))
        if isinstance(ours, list):
            row["paired_ratio_vs_gpudense"] = paired_ratio(samples, ours)
        rows.append(row)
    return rows


def run_fused_check(out_dir: str | Path, *, repeat: int = 25, quick: bool = False, copy_bytes: int = 1 << 30,
                    epilogues: bool = True, log: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]]:
    """Run :func:`time_fused` over the sweep (and :func:`time_epilogues`) on the CuPy backend.

    Writes ``out_dir/fused_check.json`` (``{"facts", "copy", "fused",
    "epilogues", "complete"}``) after every shape, ``complete`` true only at
    the end. ``quick``: the smallest shape, 5 samples, no epilogues.

    Returns:
        ``(path, data)``.

    Raises:
        BackendUnavailableError: CuPy or a CUDA device is missing.
    """
    from gpudense.backends import get_backend

    backend = get_backend("cupy")
    pool = backend.xp.get_default_memory_pool()
    info = device_facts(backend)
    repeat = 5 if quick else repeat
    copy = copy_check(backend, repeat=repeat, nbytes=copy_bytes)
    pool.free_all_blocks()
    data: dict[str, Any] = {"facts": info, "copy": copy, "fused": [], "epilogues": [], "complete": False}
    write_json(data, out_dir, "fused_check.json")  # a kill from here on keeps what was done
    for shape in FUSED_SWEEP[-1:] if quick else FUSED_SWEEP:
        for dtype in FUSED_DTYPES:
            for activation in FUSED_ACTIVATIONS:
                data["fused"].extend(time_fused(backend, shape, dtype, activation, l2_bytes=info["l2_bytes"],
                                                copy_gbps=copy["gbps"], repeat=repeat))
                pool.free_all_blocks()
                write_json(data, out_dir, "fused_check.json")
                log(f"timed fused {shape} {dtype} {activation}")
    if epilogues and not quick:
        for dims in EPILOGUE_SHAPES:
            for dtype in FUSED_DTYPES:
                data["epilogues"].extend(time_epilogues(backend, dims, dtype, repeat=repeat))
                pool.free_all_blocks()
                write_json(data, out_dir, "fused_check.json")
                log(f"timed epilogues {dims} {dtype}")
    data["complete"] = True
    return write_json(data, out_dir, "fused_check.json"), data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"),
                        help="directory for the JSON (default: $OUT, else bench/results)")
    parser.add_argument("--repeat", type=int_at_least(1), default=25, help="timed samples per measurement")
    parser.add_argument("--quick", action="store_true", help="only the smallest shape, 5 samples, no epilogues")
    args = parser.parse_args(argv)
    path, data = run_fused_check(args.out, repeat=args.repeat, quick=args.quick,
                                 log=lambda line: print(line, flush=True))
    print(f"raw results: {path}")
    print(results_table(data["fused"], baseline="gpudense fused act'+db kernel"))
    for row in data["epilogues"]:
        print(row["method"], row["dtype"], "x".join(map(str, row["shape"])),
              row.get("skipped") or f"{row['median_ms']:.4f} ms, {row['tflops']:.1f} TFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
