"""A CPU benchmark that ends in minutes: dtypes without a BLAS path are skipped (with a note, before
the sweep) unless asked for with --slow-dtypes; ceilings take a few samples of a bounded size; the
progress reports every call. Nothing about the times is asserted."""

from __future__ import annotations

import argparse
import contextlib

import pytest

from gpudense.benchmark import config as cfg
from gpudense.benchmark import timing
from gpudense.benchmark.config import BenchConfig, ceiling_matmul_n, has_blas_path
from gpudense.benchmark.sweep import sweep
from gpudense.cli import bench as bench_cli
from gpudense.cli import main


def _small(**kwargs):
    base = dict(backend="numpy", mode="smoke", shapes="tiny", repeats=2, warmup=0, threads=1,
                torch=False, seed=3)
    base.update(kwargs)
    return BenchConfig(**base)


def test_the_blas_rule_by_backend_and_dtype():
    assert has_blas_path("numpy", "float32") and has_blas_path("numpy", "float64")
    assert not has_blas_path("numpy", "float16")
    assert not has_blas_path("numpy", "no-such-dtype")  # a dtype NumPy cannot even store
    assert has_blas_path("cupy", "float16") and has_blas_path("cupy", "tf32")


def test_a_dtype_without_blas_gets_a_small_ceiling_product():
    assert ceiling_matmul_n("numpy", "float32", 2048) == 2048
    assert ceiling_matmul_n("numpy", "float16", 2048) == cfg.NO_BLAS_MATMUL_N == 256
    assert ceiling_matmul_n("numpy", "float16", 64) == 64  # never larger than the mode's
    assert ceiling_matmul_n("cupy", "float16", 8192) == 8192


def test_float16_on_numpy_is_skipped_with_a_note_before_anything_is_timed(fresh_backends):
    events = []
    doc = sweep(_small(dtypes="float32,float16"),
                progress=lambda done, total, what: events.append(("progress", what)),
                on_note=lambda note: events.append(("note", note)))
    assert {r["dtype"] for r in doc["rows"]} == {"float32"} and doc["settings"]["dtypes"] == ["float32"]
    assert set(doc["ceilings"]["matmul"]) == {"float32"}  # no float16 ceiling measured either
    notes = [e for e in events if e[0] == "note"]
    first_progress = next(i for i, e in enumerate(events) if e[0] == "progress")
    assert all(events.index(n) < first_progress for n in notes)
    skip = next(n for _, n in notes if n.startswith("float16 skipped"))
    assert "no BLAS path on the numpy backend" in skip and "--slow-dtypes" in skip
    assert skip in doc["notes"]


def test_float16_alone_on_numpy_is_an_error_saying_how_to_time_it(fresh_backends):
    with pytest.raises(ValueError) as info:
        sweep(_small(dtypes="float16"))
    message = str(info.value)
    assert "\n" not in message and "float16 has no BLAS path on the numpy backend" in message
    assert "--slow-dtypes" in message


def test_slow_dtypes_times_float16_anyway_with_a_note(fresh_backends):
    doc = sweep(_small(dtypes="float32,float16", slow_dtypes=True))
    assert {r["dtype"] for r in doc["rows"]} == {"float32", "float16"}
    assert doc["ceilings"]["matmul"]["float16"]["n"] == ceiling_matmul_n("numpy", "float16", 64)
    assert any(n.startswith("float16 has no BLAS path on the numpy backend: timed anyway") for n in doc["notes"])
    assert BenchConfig.from_dict(_small(slow_dtypes=True).to_dict()).slow_dtypes is True


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


def test_the_command_prints_the_skip_note_first_and_takes_slow_dtypes(capsys, monkeypatch, fresh_backends):
    seen = {}

    def fake_sweep(config, **kwargs):
        seen["config"] = config
        kwargs["on_note"]("float16 skipped: something")
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(bench_cli, "sweep", fake_sweep)
    assert main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--dtypes", "float32,float16",
                 "--slow-dtypes"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "gpudense bench: note: float16 skipped: something"
    assert seen["config"].slow_dtypes is True
    assert bench_cli.argv_of(argparse.Namespace(dtypes="float16", slow_dtypes=True)) == [
        "--dtypes", "float16", "--slow-dtypes"]
