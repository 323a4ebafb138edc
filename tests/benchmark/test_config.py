"""Named shapes and dtypes, the TF32 split, and BenchConfig: its checks, defaults and JSON form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpudense.benchmark import config as cfg
from gpudense.benchmark.config import BenchConfig


def test_tf32_plan():
    assert cfg.tf32_plan(["float32", "tf32", "float16"], None) == {
        "here": ["float32", "float16"], "1": ["tf32"], "0": []}
    assert cfg.tf32_plan(["float32", "tf32", "float16"], "1") == {
        "here": ["tf32", "float16"], "1": [], "0": ["float32"]}
    assert cfg.tf32_plan(["tf32"], "0")["1"] == ["tf32"]


def test_parse_shapes_and_dtypes():
    table = cfg.SHAPES["gpu"]
    assert cfg.parse_shapes(None, table) == list(table.items())
    assert cfg.parse_shapes("square, 2x3x4", table) == [
        ("square", (4096, 4096, 4096)), ("2x3x4", (2, 3, 4))]
    for bad in ("2x3", "0x1x1", "huge", ","):
        with pytest.raises(ValueError):
            cfg.parse_shapes(bad, table)
    assert cfg.parse_dtypes("float16,tf32", ["float32"]) == ["float16", "tf32"]
    with pytest.raises(ValueError):
        cfg.parse_dtypes("float8", ["float32"])
    assert cfg.storage_dtype("tf32") == np.float32


def test_parse_shapes_takes_a_sequence_too():
    assert cfg.parse_shapes(("small", "2X3X4"), cfg.SHAPES["cpu"]) == [
        ("small", (128, 64, 64)), ("2X3X4", (2, 3, 4))]
    with pytest.raises(ValueError, match="BATCHxINxOUT"):
        cfg.parse_shapes(["transformer"], cfg.SHAPES["cpu-quick"])


def test_default_gpu_shapes():
    assert cfg.SHAPES["gpu"] == {
        "small": (128, 64, 64), "tall-narrow": (1048576, 64, 64),
        "square": (4096, 4096, 4096), "transformer": (8192, 4096, 16384)}


def test_tables_and_ceiling_sizes_per_mode():
    assert cfg.shape_table(False, "smoke") is cfg.SHAPES["smoke"]
    assert cfg.shape_table(True, "smoke") is cfg.SHAPES["smoke"]
    assert cfg.shape_table(False, "quick") is cfg.SHAPES["cpu-quick"]
    assert list(cfg.shape_table(True, "quick")) == ["small", "tall-narrow", "square"]
    assert cfg.ceiling_sizes(True, "quick") == cfg.CEILING_SIZES["gpu"]
    assert cfg.ceiling_sizes(False, "full") == cfg.CEILING_SIZES["cpu"]


def test_config_normalises_comma_text_and_sequences():
    c = BenchConfig(shapes=" small, 2x3x4 ,", dtypes="Float16, tf32")
    assert c.shapes == ("small", "2x3x4") and c.dtypes == ("float16", "tf32")
    assert BenchConfig(shapes=["small"], dtypes=["float32"]) == BenchConfig(shapes="small", dtypes="float32")
    assert BenchConfig(shapes="", dtypes="").shapes is None


@pytest.mark.parametrize("kwargs, error, what", [
    ({"backend": "tpu"}, ValueError, "backend must be one of"),
    ({"mode": "fast"}, ValueError, "mode must be one of"),
    ({"dtypes": "float8"}, ValueError, "dtypes: expected names from"),
    ({"shapes": ","}, ValueError, "shapes: no shape given"),
    ({"shapes": 3}, TypeError, "shapes must be"),
    ({"repeats": 0}, ValueError, "repeats must be an int >= 1; got 0"),
    ({"warmup": -1}, ValueError, "warmup must be an int >= 0; got -1"),
    ({"threads": 0}, ValueError, "threads must be an int >= 1; got 0"),
    ({"repeats": True}, ValueError, "repeats must be an int >= 1; got True"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0; got -1"),
    ({"torch": "no"}, TypeError, "torch must be True or False"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, error, what):
    with pytest.raises(error, match=what):
        BenchConfig(**kwargs)


def test_with_defaults_fills_the_mode_defaults_per_device():
    cpu = BenchConfig(mode="quick").with_defaults("numpy")
    assert cpu.backend == "numpy" and cpu.repeats == cfg.REPEATS["quick"] and cpu.warmup == cfg.WARMUP["quick"]
    assert cpu.shapes == tuple(cfg.SHAPES["cpu-quick"]) and cpu.dtypes == ("float32",)
    assert cpu.threads == cfg.default_threads() and cpu.threads >= 1
    gpu = BenchConfig(mode="quick").with_defaults("cupy")
    assert gpu.repeats == 20 and gpu.threads is None  # at least 20 repeats on a GPU
    assert gpu.dtypes == ("float32", "tf32", "float16")
    assert BenchConfig(mode="smoke").with_defaults("cupy").repeats == cfg.REPEATS["smoke"]
    given = BenchConfig(repeats=3, warmup=0, threads=1, dtypes="float16").with_defaults("cupy")
    assert (given.repeats, given.warmup, given.threads, given.dtypes) == (3, 0, 1, ("float16",))
    assert given.with_defaults("cupy") == given  # filling in twice changes nothing
    with pytest.raises(ValueError, match="BATCHxINxOUT"):
        BenchConfig(mode="quick", shapes="transformer").with_defaults("numpy")
    with pytest.raises(ValueError, match="resolved name"):
        BenchConfig().with_defaults("auto")


def test_config_round_trips_through_json():
    c = BenchConfig(backend="cupy", mode="smoke", shapes="tiny,2x3x4", dtypes="tf32",
                    repeats=4, warmup=0, threads=2, torch=False, seed=7)
    text = json.dumps(c.to_dict())
    assert json.loads(text)["shapes"] == ["tiny", "2x3x4"]
    assert BenchConfig.from_dict(json.loads(text)) == c
    with pytest.raises(ValueError, match="unknown benchmark configuration keys"):
        BenchConfig.from_dict({"repeat": 3})
    with pytest.raises(ValueError, match="must be a dict"):
        BenchConfig.from_dict([])
