"""The sweep: every stage of a dense layer, per shape and dtype, against the ceilings of the same run.

:func:`sweep` takes a :class:`~gpudense.benchmark.config.BenchConfig` and
returns the result document (layout :data:`~gpudense.benchmark.report.SCHEMA`).
On the CuPy backend, dtypes that need another ``CUPY_TF32`` value run in a
child process (:mod:`gpudense.benchmark._child`) that gets its configuration
as JSON on stdin and writes its document to a file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable, Sequence

import gpudense._env as _env
from gpudense.benchmark.ceilings import (
    add_rates,
    ceiling_calls,
    finish_ceilings,
    measure_ceilings,
    random_normal,
)
from gpudense.benchmark.config import (
    COMPARISONS,
    STAGES,
    BenchConfig,
    ceiling_sizes,
    parse_shapes,
    shape_table,
    storage_dtype,
    tf32_plan,
)
from gpudense.benchmark.isolation import SpinDown
from gpudense.benchmark.machine import environment, rotation_sizes, utc_now
from gpudense.benchmark.report import SCHEMA
from gpudense.benchmark.stats import n_rotating_sets, paired_ratio, stage_work, summarize
from gpudense.benchmark.timing import calls_of, run_rounds, timer_for
from gpudense.benchmark.torch_linear import TORCH_SLOW_RATIO, TorchLinear, torch_cpu_slowdown, torch_importable

#: Seconds of warm-up calls before every timed block (outside smoke mode).
MIN_WARMUP_S = 0.1
#: The step's floor, timed with the stages: the backend's three bare products (x @ w, dy @ w.T,
#: x.T @ dy: the array module's, float16 and bfloat16 on NumPy through float32) and the one pass
#: over dy of the bias gradient. The step row
#: carries it as the ratio "floor" and as floor_samples_s / floor_stats; it is no row of its own.
FLOOR = "floor"

#: ``progress(done, total, what)``: ``done`` of ``total`` steps finished, ``what`` runs next.
Progress = Callable[[int, int, str], None]
#: ``step_progress(done, total)``: ``done`` of the current step's ``total`` calls made.
StepProgress = Callable[[int, int], None]


def rotating_sets_for(dims: tuple[int, int, int], itemsize: int, *, cache_bytes: int, budget_bytes: int,
                      max_sets: int, copies: int = 1) -> int:
    """How many input sets ``(x, w, b, dy)`` of a shape to rotate through.

    Enough that what the least-reading stage touches (``db`` reads only
    ``dy``; a stage reads at least ``x`` and ``w``) exceeds twice
    ``cache_bytes`` (:func:`n_rotating_sets`), but never more sets than
    ``budget_bytes`` holds: each set keeps all four arrays, ``copies`` times
    (2 where torch keeps its own copy of them).

    Example:
        >>> rotating_sets_for((1, 4096, 4096), 4, cache_bytes=32 << 20, budget_bytes=512 << 20, max_sets=512)
        7
    """
    batch, n_in, n_out = dims
    reads = min(batch * n_in + n_in * n_out, batch * n_out) * itemsize
    held = (batch * n_in + n_in * n_out + n_out + batch * n_out) * itemsize * copies
    n = n_rotating_sets(reads, cache_bytes, budget_bytes=budget_bytes, max_sets=max_sets)
    return max(1, min(n, budget_bytes // held))


def bench_shape_calls(*, repeats: int, warmup: int, torch_ok: bool) -> int:
    """How many calls :func:`bench_shape` makes: every stage, comparison and the floor, timed and warm-up.

    Example:
        >>> bench_shape_calls(repeats=4, warmup=0, torch_ok=False)  # 5 stages, 2 comparisons and the floor
        32
    """
    return calls_of(len(STAGES) + len(COMPARISONS) - (not torch_ok) + 1, repeats=repeats, warmup=warmup)


def bench_shape(backend: Any, *, shape_name: str, dims: tuple[int, int, int], dtype_name: str,
                repeats: int, warmup: int, cache_bytes: int, budget_bytes: int, torch_ok: bool,
                threads: int | None, seed: int, max_sets: int = 512,
                on_call: Callable[[], None] | None = None, min_warmup_s: float = 0.0,
                settle: Callable[[], Any] | None = None) -> list[dict[str, Any]]:
    """Time all stages and comparisons for one shape and dtype.

    Inputs rotate through enough random sets (:func:`rotating_sets_for`)
    that what the least-reading stage (``db``, which reads only ``dy``)
    touches exceeds ``cache_bytes``, within ``budget_bytes`` of memory and
    ``max_sets``. ``on_call`` is called after every call
    (:func:`bench_shape_calls` counts them). The stages run in blocks, in
    alternating order from round to round, each warmed up for
    ``min_warmup_s`` and preceded by ``settle`` (see
    :func:`~gpudense.benchmark.timing.run_rounds`).

    Returns:
        One row per stage: shape, dims, dtype, stage, impl, samples and their
        statistics, flops and bytes, paired ratios, ``n_sets`` and ``timer``;
        no rates yet (:func:`~gpudense.benchmark.ceilings.add_rates`). The
        ``step`` row also has the :data:`FLOOR` ratio and samples.
    """
    from gpudense.functional import dense_forward
    from gpudense.layer import Dense

    xp = backend.xp
    batch, n_in, n_out = dims
    dt = storage_dtype(dtype_name)
    s = dt.itemsize
    n_sets = rotating_sets_for(dims, s, cache_bytes=cache_bytes, budget_bytes=budget_bytes,
                               max_sets=max_sets, copies=3 if torch_ok else 2)
    gen = xp.random.default_rng(seed)
    sets = []
    for _ in range(n_sets):
        x = random_normal(xp, gen, (batch, n_in), dt)
        w = random_normal(xp, gen, (n_in, n_out), dt, 1.0 / math.sqrt(n_in))
        b = random_normal(xp, gen, (n_out,), dt)
        dy = random_normal(xp, gen, (batch, n_out), dt)
        sets.append((x, w, b, dy))
    ones = xp.ones(batch, dtype=dt)
    # "step" is the layer as training runs it: a Dense over each set's w and b (its parameters are
    # those arrays), forward then backward into its kept gradient arrays, then zero_grad
    layers = []
    for x, w, b, dy in sets:
        layer = Dense(n_in, n_out, dtype=dt, backend=backend, rng=0)
        layer.w[...], layer.b[...] = w, b
        layer.bind(w, b, xp.empty_like(w), xp.empty_like(b))
        layers.append(layer)

    def layer_step(k: int) -> None:
        layers[k](sets[k][0])
        layers[k].backward(sets[k][3])
        layers[k].zero_grad()

    fns: dict[str, Callable[[int], Any]] = {
        "forward": lambda k: dense_forward(sets[k][0], sets[k][1], sets[k][2]),
        "dx": lambda k: backend.matmul(sets[k][3], sets[k][1].T),
        "dw": lambda k: backend.matmul(sets[k][0].T, sets[k][3]),
        "db": lambda k: backend.bias_grad(sets[k][3]),
        "step": layer_step,
        "db.sum": lambda k: sets[k][3].sum(axis=0),
        "db.ones": lambda k: ones @ sets[k][3],
        # the floor of a step: the backend's three bare products and one pass over dy
        FLOOR: lambda k: (backend.matmul(sets[k][0], sets[k][1]), backend.matmul(sets[k][3], sets[k][1].T),
                          backend.matmul(sets[k][0].T, sets[k][3]), backend.bias_grad(sets[k][3])),
    }
    if torch_ok:
        tb = TorchLinear("cuda" if backend.name == "cupy" else "cpu", dtype_name, threads)
        steps = [tb.make(*st) for st in sets]
        fns["torch.step"] = lambda k: steps[k]()

    timer = timer_for(backend)
    samples = run_rounds(fns, n_sets=n_sets, repeats=repeats, warmup=warmup, timer=timer,
                         nvtx=backend.nvtx_range, on_call=on_call, min_warmup_s=min_warmup_s, alternate=True,
                         settle=settle)
    rows = []
    floor = samples.pop(FLOOR)
    for stage, ss in samples.items():
        flops, nbytes = stage_work(stage, batch, n_in, n_out, s)
        ratios = {}
        extra: dict[str, Any] = {}
        if stage == "step":
            ratios[FLOOR] = paired_ratio(ss, floor)
            extra = {"floor_samples_s": [float(v) for v in floor], "floor_stats": summarize(floor)}
        if stage == "step" and "torch.step" in samples:
            ratios["torch.step"] = paired_ratio(ss, samples["torch.step"])
        if stage == "db":
            ratios["db.sum"] = paired_ratio(ss, samples["db.sum"])
            ratios["db.ones"] = paired_ratio(ss, samples["db.ones"])
        rows.append({
            "shape": shape_name, "batch": batch, "n_in": n_in, "n_out": n_out,
            "dtype": dtype_name, "stage": stage,
            "impl": "torch" if stage.startswith("torch") else
                    ("gpudense" if stage in STAGES else "array-module"),
            "samples_s": [float(v) for v in ss], "stats": summarize(ss),
            "flops": int(flops), "bytes": int(nbytes), "ratios": ratios,
            "n_sets": n_sets, "timer": timer.kind, **extra,
        })
    del sets, fns, layers
    return rows


def sweep(config: BenchConfig, *, progress: Progress | None = None, command: Sequence[str] = (),
          copy_gbps: float | None = None, on_note: Callable[[str], None] | None = None,
          step_progress: StepProgress | None = None) -> dict[str, Any]:
    """Run the benchmark ``config`` describes; return the result document.

    The ceilings are measured before and after the shapes; each shape and
    dtype is timed by :func:`bench_shape`; rates and fractions are added at
    the end. BLAS thread pools are left as they are: to run at
    ``config.threads``, limit them around the call (``gpudense bench`` does
    it with threadpoolctl). On NumPy, float16 and bfloat16 products go
    through float32 BLAS (the backend's ``matmul``), as the layer computes
    them; the run notes it.

    Args:
        config: The run; its defaults are filled in for the backend it names.
        progress: Called as ``progress(done, total, what)`` before each step
            and once at the end (``done == total``).
        command: The command line recorded in the document.
        copy_gbps: A copy bandwidth measured elsewhere (a TF32 child process
            gets its parent's); the copy ceiling is then not measured.
        on_note: Called with each note as soon as it is known; the notes
            about dtypes and torch come before anything is timed.
        step_progress: Called after every call within a step as
            ``step_progress(done, total)``: ``done`` of the step's ``total``
            calls (so a progress bar moves within a long step).

    Returns:
        ``{"schema", "created_utc", "command", "settings", "notes",
        "environment", "ceilings", "rows"}`` (see
        :func:`~gpudense.benchmark.report.check_document`); rates whose
        ceiling is unknown are NaN.

    Raises:
        ValueError: a bad shape name, or only dtypes the backend cannot run
            (tf32 alone on NumPy).
        BackendUnavailableError: the backend cannot be used here.
        RuntimeError: a TF32 child process failed.

    Example:
        >>> doc = sweep(BenchConfig(backend="numpy", mode="smoke"))  # doctest: +SKIP
        >>> print(format_table(doc))  # doctest: +SKIP
    """
    from gpudense.backends import get_backend

    be = get_backend(config.backend)
    on_gpu = be.name == "cupy"
    config = config.with_defaults(be.name)
    mode, repeats, warmup, threads = config.mode, config.repeats, config.warmup, config.threads
    assert repeats is not None and warmup is not None and config.dtypes is not None
    shapes = parse_shapes(config.shapes, shape_table(on_gpu, mode))
    dtypes = list(config.dtypes)
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if on_note is not None:
            on_note(text)

    if not on_gpu and "tf32" in dtypes:
        dtypes = [d for d in dtypes if d != "tf32"]
        if not dtypes:
            raise ValueError("dtypes: tf32 needs the cupy backend (TF32 is a GPU mode); "
                             "on a CPU use float32 or float16")
        note("tf32 rows skipped: TF32 is a GPU matrix-unit mode (backend is numpy)")
    if not on_gpu and {"float16", "bfloat16"} & set(dtypes):
        note("float16 and bfloat16 on NumPy: products in float32 (copies of the operands, one BLAS "
             "call), rounded once; db.sum and db.ones use NumPy's own 16-bit loops")
    torch_ok = config.torch and torch_importable()
    if not torch_ok:
        note("torch.step not measured: " + ("--no-torch given" if not config.torch
                                            else "torch is not importable"))
    torch_skip = set()
    for dt in dtypes if torch_ok and not on_gpu else ():
        if dt in ("float16", "bfloat16"):
            slowdown = torch_cpu_slowdown(dt, threads)
            if slowdown > TORCH_SLOW_RATIO:
                torch_skip.add(dt)
                note(f"torch.step not measured for {dt}: torch's {dt} matrix product on this CPU takes "
                     f"{slowdown:.0f}x its float32 time (a 256^3 probe; no native {dt} GEMM here)")
    plan = tf32_plan(dtypes, _env.cupy_tf32_value()) if on_gpu else {
        "here": dtypes, "1": [], "0": []}
    cache, budget = rotation_sizes(be)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": utc_now(),
        "command": list(command),
        "settings": {
            "backend": be.name, "mode": mode, "repeats": repeats, "warmup": warmup,
            "threads": threads, "shapes": {n: list(d) for n, d in shapes},
            "dtypes": dtypes, "cache_bytes": cache, "rotation_budget_bytes": budget,
            "seed": config.seed,
        },
        "notes": notes,
    }
    doc["environment"] = environment(be, threads)
    # Contenders apart: every block warmed up for MIN_WARMUP_S, stages in alternating order, and on
    # a CPU a wait for the previous block's BLAS/OpenMP worker threads to stop spinning.
    min_warmup_s = 0.0 if mode == "smoke" else MIN_WARMUP_S
    settle = SpinDown() if not on_gpu and mode != "smoke" else None
    tasks = [(n, d, dt) for dt in plan["here"] for n, d in shapes]
    total = len(tasks) + 2
    sizes = ceiling_sizes(on_gpu, mode)
    calls = {"done": 0, "total": 1}

    def report(done: int, what: str, step_calls: int = 1) -> None:
        calls.update(done=0, total=step_calls)
        if progress is not None:
            progress(done, total, what)

    def called() -> None:
        calls["done"] += 1
        if step_progress is not None:
            step_progress(calls["done"], calls["total"])

    on_call = called if step_progress is not None else None
    n_ceiling_calls = ceiling_calls(len(plan["here"]), copy=copy_gbps is None, repeats=repeats, warmup=warmup)
    report(0, "ceilings", n_ceiling_calls)
    before = measure_ceilings(be, plan["here"], sizes=sizes, repeats=repeats, warmup=warmup,
                              copy=copy_gbps is None, threads=threads, on_call=on_call)
    if copy_gbps is not None:
        before["copy"] = {"gbps": copy_gbps, "how": "measured by the parent process"}
    rows: list[dict[str, Any]] = []
    for i, (name, dims, dt) in enumerate(tasks):
        with_torch = torch_ok and dt not in torch_skip
        report(1 + i, f"{name} {dt}", bench_shape_calls(repeats=repeats, warmup=warmup, torch_ok=with_torch))
        rows += bench_shape(be, shape_name=name, dims=dims, dtype_name=dt, repeats=repeats,
                            warmup=warmup, cache_bytes=cache, budget_bytes=budget,
                            torch_ok=with_torch, threads=threads, seed=config.seed + i,
                            max_sets=2 if mode == "smoke" else 512, on_call=on_call,
                            min_warmup_s=min_warmup_s, settle=settle)
    report(total - 1, "ceilings again", n_ceiling_calls)
    after = measure_ceilings(be, plan["here"], sizes=sizes, repeats=repeats, warmup=warmup,
                             copy=copy_gbps is None, threads=threads, on_call=on_call)
    report(total, "done")
    ceilings = finish_ceilings(before, after)
    for value, group in (("1", plan["1"]), ("0", plan["0"])):
        if group:
            child = run_child(dataclasses.replace(config, dtypes=tuple(group)), value,
                              ceilings["copy"]["gbps"])
            ceilings["matmul"].update(child["ceilings"]["matmul"])
            rows += child["rows"]
            notes += [f"[CUPY_TF32={value} child] {n}" for n in child["notes"]]
    add_rates(rows, ceilings)
    doc["isolation"] = {"min_warmup_s": min_warmup_s, "order": "alternating",
                        "spin_down": settle.summary() if settle is not None else None}
    doc["ceilings"] = ceilings
    doc["rows"] = rows
    return doc


def run_child(config: BenchConfig, tf32: str, copy_gbps: float) -> dict[str, Any]:
    """Run ``config`` in a child process with ``CUPY_TF32=tf32`` (CuPy reads it once per process).

    The child (``python -m gpudense.benchmark._child OUT``) reads
    ``{"config": config.to_dict(), "copy_gbps": copy_gbps}`` as JSON on stdin
    and writes its document to ``OUT`` (NaN kept); its standard output is
    discarded and its errors go to this process's stderr.

    Returns:
        The child's result document.

    Raises:
        RuntimeError: the child exited with a non-zero status.
    """
    payload = json.dumps({"config": config.to_dict(), "copy_gbps": copy_gbps})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "child.json")
        argv = [sys.executable, "-m", "gpudense.benchmark._child", path]
        proc = subprocess.run(argv, input=payload, text=True, stdout=subprocess.DEVNULL,
                              env=dict(os.environ, CUPY_TF32=tf32))
        if proc.returncode != 0:
            raise RuntimeError(f"the CUPY_TF32={tf32} child run for {list(config.dtypes or ())} "
                               f"failed (exit {proc.returncode})")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
