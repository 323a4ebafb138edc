"""sweep(config) on the NumPy backend, its progress reports and notes, and the TF32 child's JSON protocol.

Nothing about the times is asserted, only that every promised row and field is there.
"""

from __future__ import annotations

import json

import pytest

from gpudense.benchmark import report
from gpudense.benchmark.config import REPEATS, STAGES, BenchConfig
from gpudense.benchmark import sweep as sweep_module
from gpudense.benchmark.sweep import run_child, sweep


def _small(**kwargs):
    base = dict(backend="numpy", mode="smoke", shapes="tiny,3x5x2", repeats=2, warmup=0,
                threads=1, torch=False, seed=3)
    base.update(kwargs)
    return BenchConfig(**base)


def test_sweep_returns_a_valid_document_with_every_stage(fresh_backends):
    seen = []
    doc = sweep(_small(), progress=lambda done, total, what: seen.append((done, total, what)),
                command=["gpudense", "bench", "--smoke"])
    report.check_document(json.loads(report.json_text(doc)))
    assert doc["command"] == ["gpudense", "bench", "--smoke"]
    s = doc["settings"]
    assert (s["backend"], s["mode"], s["repeats"], s["warmup"], s["threads"], s["seed"]) == (
        "numpy", "smoke", 2, 0, 1, 3)
    assert s["shapes"] == {"tiny": [8, 4, 3], "3x5x2": [3, 5, 2]} and s["dtypes"] == ["float32"]
    for name, dims in (("tiny", (8, 4, 3)), ("3x5x2", (3, 5, 2))):
        rows = [r for r in doc["rows"] if r["shape"] == name]
        assert {r["stage"] for r in rows} == set(STAGES) | {"db.sum", "db.ones"}
        for r in rows:
            assert (r["batch"], r["n_in"], r["n_out"]) == dims
            assert len(r["samples_s"]) == 2 and all(v > 0 for v in r["samples_s"])
            assert r["timer"] == "perf_counter" and r["gbps"] > 0
        db = next(r for r in rows if r["stage"] == "db")
        assert set(db["ratios"]) == {"db.sum", "db.ones"}
    assert doc["ceilings"]["copy"]["threads"] == 1 and doc["ceilings"]["copy"]["verified"] is True
    assert "torch.step not measured: --no-torch given" in doc["notes"]
    assert doc["isolation"] == {"min_warmup_s": 0.0, "order": "alternating", "spin_down": None}  # smoke mode
    # ceilings, two shapes, ceilings again, then done
    assert seen == [(0, 4, "ceilings"), (1, 4, "tiny float32"), (2, 4, "3x5x2 float32"),
                    (3, 4, "ceilings again"), (4, 4, "done")]


def test_sweep_fills_in_the_mode_defaults(fresh_backends):
    doc = sweep(BenchConfig(backend="numpy", mode="smoke", shapes="tiny", threads=1, torch=False))
    assert doc["settings"]["repeats"] == REPEATS["smoke"] and doc["command"] == []
    assert all(len(r["samples_s"]) == REPEATS["smoke"] for r in doc["rows"])


def test_sweep_on_numpy_skips_tf32_with_a_note_and_fails_on_tf32_alone(fresh_backends):
    doc = sweep(_small(shapes="tiny", dtypes="float32,tf32"))
    assert {r["dtype"] for r in doc["rows"]} == {"float32"} and doc["settings"]["dtypes"] == ["float32"]
    assert any(n.startswith("tf32 rows skipped") for n in doc["notes"])
    with pytest.raises(ValueError, match="tf32 needs the cupy backend"):
        sweep(_small(dtypes="tf32"))


def test_sweep_with_a_given_copy_bandwidth_does_not_measure_the_copy(fresh_backends):
    doc = sweep(_small(shapes="tiny"), copy_gbps=7.0)
    assert doc["ceilings"]["copy"] == {"gbps": 7.0, "how": "measured by the parent process"}
    assert all(r["frac_bw"] == pytest.approx(r["gbps"] / 7.0) for r in doc["rows"])


def test_child_process_gets_its_configuration_as_json_and_its_tf32_variable(fresh_backends, monkeypatch):
    """The child protocol, run for real on NumPy: config on stdin, document back through a file."""
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    config = _small(shapes="3x5x2").with_defaults("numpy")
    doc = run_child(config, "1", 5.0)
    assert doc["environment"]["env_vars"]["CUPY_TF32"] == "1"
    assert doc["ceilings"]["copy"]["gbps"] == 5.0
    s = doc["settings"]
    assert (s["repeats"], s["warmup"], s["threads"], s["seed"], s["shapes"]) == (2, 0, 1, 3, {"3x5x2": [3, 5, 2]})
    assert {r["stage"] for r in doc["rows"]} == set(STAGES) | {"db.sum", "db.ones"}
    assert "float32" in doc["ceilings"]["matmul"]


def test_a_failing_child_is_a_runtime_error(fresh_backends, monkeypatch):
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    # the child cannot run shapes that do not exist; it exits non-zero
    config = _small(shapes="no-such-shape", dtypes="float32")
    with pytest.raises(RuntimeError, match=r"the CUPY_TF32=0 child run for \['float32'\] failed \(exit 1\)"):
        run_child(config, "0", 5.0)


# -- the GPU branch, on a stand-in for the CuPy backend (NumPy underneath; see conftest.py) ------

def test_sweep_gpu_branch_uses_cuda_events_the_l2_and_one_copyto(stand_in_cupy):
    doc = sweep(BenchConfig(backend="cupy", mode="smoke", shapes="tiny", dtypes="float32,float16",
                            repeats=2, torch=False))
    report.check_document(json.loads(report.json_text(doc)))
    s = doc["settings"]
    assert s["backend"] == "cupy" and s["threads"] is None and s["repeats"] == 2
    assert s["cache_bytes"] == stand_in_cupy.xp.L2_BYTES
    assert s["rotation_budget_bytes"] == 1 << 30  # an eighth of the 8 GiB free, at most 2 GiB
    assert doc["environment"]["device"] == "0: stand-in (NumPy underneath)"
    assert {r["timer"] for r in doc["rows"]} == {"cuda-events"}
    assert {r["dtype"] for r in doc["rows"]} == {"float32", "float16"}
    copy = doc["ceilings"]["copy"]
    assert copy["how"] == "copyto of a float32 array; bytes read + written" and "threads" not in copy
    assert copy["verified"] is True and len(copy["samples_s"]) == 4  # before and after the sweep
    assert set(doc["ceilings"]["matmul"]) == {"float32", "float16"}
    assert not any("float16 on NumPy" in n for n in doc["notes"])


@pytest.mark.parametrize("tf32_env, child_dtypes, child_value", [(None, ("tf32",), "1"),
                                                                  ("1", ("float32",), "0")])
def test_sweep_runs_the_other_cupy_tf32_dtypes_in_a_child_and_merges_them(
        stand_in_cupy, monkeypatch, tf32_env, child_dtypes, child_value):
    if tf32_env is not None:
        monkeypatch.setenv("CUPY_TF32", tf32_env)
    calls = []
    child_dtype = child_dtypes[0]

    def fake_run_child(config, tf32, copy_gbps):
        calls.append((config, tf32, copy_gbps))
        row = {"shape": "tiny", "batch": 8, "n_in": 4, "n_out": 3, "dtype": child_dtype, "stage": "dx",
               "flops": 10**9, "bytes": 10**6, "stats": {"median": 1e-3}, "ratios": {}}
        return {"ceilings": {"matmul": {child_dtype: {"n": 64, "tflops": 4.0}}}, "rows": [row],
                "notes": ["from the child"]}

    monkeypatch.setattr(sweep_module, "run_child", fake_run_child)
    doc = sweep(BenchConfig(backend="cupy", mode="smoke", shapes="tiny", dtypes="float32,tf32,float16",
                            repeats=1, torch=False, seed=4))
    assert len(calls) == 1
    config, tf32, copy_gbps = calls[0]
    assert tf32 == child_value and config.dtypes == child_dtypes
    assert (config.backend, config.mode, config.repeats, config.seed, config.torch) == ("cupy", "smoke", 1, 4, False)
    assert copy_gbps == doc["ceilings"]["copy"]["gbps"]  # the parent's copy ceiling
    here = {"float32", "tf32", "float16"} - {child_dtype}
    assert {r["dtype"] for r in doc["rows"]} == here | {child_dtype}
    assert set(doc["ceilings"]["matmul"]) == {"float32", "tf32", "float16"}
    merged = next(r for r in doc["rows"] if r["dtype"] == child_dtype)
    assert merged["tflops"] == pytest.approx(1.0) and merged["frac_flops"] == pytest.approx(0.25)
    assert f"[CUPY_TF32={child_value} child] from the child" in doc["notes"]


def test_step_rows_carry_the_floor_of_three_products_and_one_pass(fresh_backends):
    doc = sweep(_small(repeats=3))
    for row in doc["rows"]:
        if row["stage"] == "step":
            assert sweep_module.FLOOR in row["ratios"] and row["ratios"][sweep_module.FLOOR] > 0
            assert len(row["floor_samples_s"]) == 3 and row["floor_stats"]["n"] == 3
        else:
            assert sweep_module.FLOOR not in row["ratios"] and "floor_stats" not in row
    assert sweep_module.FLOOR not in {r["stage"] for r in doc["rows"]}


@pytest.mark.parametrize("dims", [(1, 4096, 4096), (256, 4096, 4096), (1048576, 64, 64), (128, 64, 64), (3, 5, 2)])
@pytest.mark.parametrize("copies", [1, 2])
def test_rotating_sets_never_hold_more_than_the_budget(dims, copies):
    batch, n_in, n_out = dims
    budget = 512 << 20
    n = sweep_module.rotating_sets_for(dims, 4, cache_bytes=32 << 20, budget_bytes=budget, max_sets=512,
                                       copies=copies)
    held = (batch * n_in + n_in * n_out + n_out + batch * n_out) * 4 * copies
    assert 1 <= n <= 512
    assert n == 1 or n * held <= budget  # a batch-1 layer's 64 MiB w counts, not only the 16 KiB dy it reads
    if held * 512 <= budget:  # small shapes: enough sets to pass twice the cache, up to max_sets
        assert n == min(512, -(-2 * (32 << 20) // (min(batch * n_in + n_in * n_out, batch * n_out) * 4)))
