"""A CPU benchmark that ends in minutes: float16 and bfloat16 products go through float32 BLAS (with a
note before the sweep); ceilings take a few samples; the progress reports every call. Nothing about
the times is asserted."""

from __future__ import annotations

import contextlib

import pytest

from gpudense.benchmark import config as cfg
from gpudense.benchmark import timing
from gpudense.benchmark.config import BenchConfig
from gpudense.benchmark.sweep import sweep
from gpudense.cli import bench as bench_cli
from gpudense.cli import main


def _small(**kwargs):
    base = dict(backend="numpy", mode="smoke", shapes="tiny", repeats=2, warmup=0, threads=1,
                torch=False, seed=3)
    base.update(kwargs)
    return BenchConfig(**base)


def test_float16_on_numpy_runs_through_float32_blas_with_a_note_first(fresh_backends):
    notes = []
    doc = sweep(_small(dtypes="float32,float16"), on_note=notes.append)
    assert {r["dtype"] for r in doc["rows"]} == {"float32", "float16"}
    assert set(doc["ceilings"]["matmul"]) == {"float32", "float16"}
    n = doc["ceilings"]["matmul"]["float16"]["n"]
    assert n == doc["ceilings"]["matmul"]["float32"]["n"]  # the mode's size: no slow loop to avoid
    assert notes[0].startswith("float16 and bfloat16 on NumPy: products in float32")
    assert notes[0] in doc["notes"]


def test_torch_is_not_timed_in_a_16_bit_dtype_it_has_no_fast_product_for(monkeypatch, fresh_backends):
    """Where torch's CPU float16 product is many times its float32 one, torch.step is left out of that
    dtype's rows, with a note before the sweep; a dtype where it is fast keeps its comparison."""
    from gpudense.benchmark import sweep as sweep_mod

    slowdown = {"float16": 37.0, "bfloat16": 1.5}
    monkeypatch.setattr(sweep_mod, "torch_importable", lambda: True)
    monkeypatch.setattr(sweep_mod, "torch_cpu_slowdown", lambda dt, threads: slowdown[dt])
    made = []

    class FakeTorch:
        def __init__(self, device, dtype_name, threads):
            made.append(dtype_name)

        def make(self, x, w, b, dy):
            return lambda: None

    monkeypatch.setattr(sweep_mod, "TorchLinear", FakeTorch)
    notes = []
    doc = sweep(_small(dtypes="float16,bfloat16", torch=True), on_note=notes.append)
    torch_rows = {r["dtype"] for r in doc["rows"] if r["stage"] == "torch.step"}
    assert torch_rows == {"bfloat16"} and set(made) == {"bfloat16"}
    skipped = [n for n in notes if n.startswith("torch.step not measured for float16")]
    assert len(skipped) == 1 and "37x its float32 time" in skipped[0], notes
    assert not any("for bfloat16" in n for n in notes)


def test_no_16_bit_product_runs_in_numpys_own_loop(monkeypatch, fresh_backends):
    """Every timed float16 product (stages, floor, ceiling) goes through float32 BLAS: np.matmul never
    gets a float16 operand (NumPy's float16 matmul is a plain loop, minutes at the CPU shapes)."""
    import numpy as np

    real = np.matmul
    float16_calls = []

    def spy(a, b, *args, **kwargs):
        if np.float16 in (np.asarray(a).dtype, np.asarray(b).dtype):
            float16_calls.append((np.shape(a), np.shape(b)))
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(np, "matmul", spy)
    doc = sweep(_small(dtypes="float16"))
    assert {r["stage"] for r in doc["rows"]} >= {"forward", "dx", "dw", "step"}
    assert "floor" in next(r for r in doc["rows"] if r["stage"] == "step")["ratios"]
    assert float16_calls == []


def test_the_ceiling_product_is_the_backends_own(monkeypatch, fresh_backends):
    """The matrix-product ceiling goes through backend.matmul, the layer's own product."""
    from gpudense.backends import get_backend
    from gpudense.benchmark.ceilings import matmul_ceiling

    be = get_backend("numpy")
    calls = []
    real = type(be).matmul

    def spy(self, a, b, out=None):
        calls.append(a.dtype.name)
        return real(self, a, b, out=out)

    monkeypatch.setattr(type(be), "matmul", spy)
    matmul_ceiling(be, "float16", 8, repeats=2, warmup=1)
    assert calls == ["float16"] * 3


def test_ceiling_samples_do_not_grow_with_repeats(fresh_backends):
    doc = sweep(_small(repeats=cfg.CEILING_REPEATS + 7, warmup=3))
    for ceiling in (doc["ceilings"]["copy"], doc["ceilings"]["matmul"]["float32"]):
        assert len(ceiling["samples_s"]) == 2 * cfg.CEILING_REPEATS  # before and after the sweep
    assert all(len(r["samples_s"]) == cfg.CEILING_REPEATS + 7 for r in doc["rows"])


def test_run_rounds_reports_every_call():
    calls = []
    samples = timing.run_rounds({"a": lambda k: None, "b": lambda k: None}, n_sets=1, repeats=7, warmup=2,
                                timer=timing.CpuTimer(), nvtx=lambda name: contextlib.nullcontext(),
                                on_call=lambda: calls.append(1))
    assert len(samples["a"]) == len(samples["b"]) == 7
    assert len(calls) == timing.calls_of(2, repeats=7, warmup=2) == 2 * (7 + 2 * 4)
    assert timing.calls_of(1, repeats=3, warmup=1, rounds=1) == 4


def test_the_sweep_reports_progress_within_every_step(fresh_backends):
    steps, calls = [], []
    sweep(_small(shapes="tiny,3x5x2", repeats=3, warmup=1),
          progress=lambda done, total, what: steps.append(what),
          step_progress=lambda done, total: calls.append((len(steps), done, total)))
    assert steps == ["ceilings", "tiny float32", "3x5x2 float32", "ceilings again", "done"]
    for step in range(1, 5):  # every step but "done" reports each of its calls, 1..total
        mine = [(done, total) for s, done, total in calls if s == step]
        total = mine[0][1]
        assert mine == [(i, total) for i in range(1, total + 1)], steps[step - 1]
    shape_calls = [total for s, _, total in calls if s == 2]
    # the stages, db.sum, db.ones and the step's floor (no torch in _small)
    assert shape_calls[0] == timing.calls_of(len(cfg.STAGES) + 2 + 1, repeats=3, warmup=1)


def test_the_command_prints_notes_first(capsys, monkeypatch, fresh_backends):
    seen = {}

    def fake_sweep(config, **kwargs):
        seen["config"] = config
        kwargs["on_note"]("float16 and bfloat16 on NumPy: something")
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(bench_cli, "sweep", fake_sweep)
    assert main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--dtypes", "float32,float16"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "gpudense bench: note: float16 and bfloat16 on NumPy: something"
    assert seen["config"].dtypes == ("float32", "float16")
