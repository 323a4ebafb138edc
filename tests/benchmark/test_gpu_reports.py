"""The kernel report (bench/kernel_report.py) on a stand-in for CuPy, and the ratios (bench/gpu_report.py)
from the device checks run on the stand-in CuPy backend (tests/benchmark/conftest.py)."""

from __future__ import annotations

import json
import types

import device_check as dc
import fused_check as fc
import gpu_report
import kernel_report as kr


def test_the_entry_points_found_in_the_sources_are_those_the_loader_builds():
    from gpudense.backends.cuda import loader

    found = [name for path in kr.kernel_files() for name in kr.entry_points(path.read_text())]
    assert len(found) == len(set(found))  # each entry point once
    assert set(loader.ENTRY_POINTS) <= set(found)


class _Fn:
    def __init__(self, name, regs):
        self.name, self.num_regs = name, regs
        self.local_size_bytes = 16 if name.endswith("f64") else 0
        self.shared_size_bytes, self.const_size_bytes, self.max_threads_per_block = 128, 0, 256
        self.ptx_version, self.binary_version = 90, 90
        self.kernel = types.SimpleNamespace(ptr=id(self))


class _StandInCupy:
    """What kernel_report asks of CuPy: RawModule, the device's attributes and properties, the occupancy call."""

    def __init__(self):
        self.built = []
        attrs = {"MaxRegistersPerMultiprocessor": 65536, "MaxThreadsPerMultiProcessor": 2048,
                 "MultiProcessorCount": 132}
        self.cuda = types.SimpleNamespace(
            Device=lambda: types.SimpleNamespace(attributes=attrs, id=0),
            runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"stand-in", "major": 9,
                                                                         "minor": 0}),
            driver=types.SimpleNamespace(occupancyMaxActiveBlocksPerMultiprocessor=lambda ptr, block, smem: 4),
        )

    def RawModule(self, code, options):
        assert code.startswith('#line 1 "') and any(o.startswith("-DGPUDENSE_BLOCK=") for o in options)
        self.built.append(code)
        return types.SimpleNamespace(get_function=lambda name: _Fn(name, 32))


def test_the_kernel_report_describes_every_entry_point_and_writes_json(tmp_path):
    cp = _StandInCupy()
    out = tmp_path / "kernels.json"
    lines = []
    data = kr.report(cp, kr.kernel_files(), out, log=lines.append)
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert len(cp.built) == len(kr.kernel_files()) == len(data["files"])
    for entry in data["files"]:
        assert entry["build_s"] >= 0 and entry["entry_points"]
        for name, row in entry["entry_points"].items():
            assert row["num_regs"] == 32 and row["blocks_per_sm_driver"] == 4
            assert row["blocks_per_sm_plan"] == 8  # 256 threads x 32 registers: 8 blocks fill 65536 registers
    assert data["device"] == "stand-in (sm_90)" and data["block"] == 256
    assert isinstance(data["backend_first_bias_grad_s"], str)  # no real CuPy backend here: says why
    assert any("local memory in: bias_grad_pass1_f64" in ln for ln in lines)


def test_a_file_that_does_not_compile_is_recorded_and_the_report_fails(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void broken(float* x) { x[0] = ; }\n')
    cp = _StandInCupy()

    def refuse(code, options):
        raise RuntimeError("NVRTC_ERROR_COMPILATION\nline 1: expected an expression")
    cp.RawModule = refuse
    data = kr.report(cp, [bad], tmp_path / "k.json", log=lambda line: None)
    assert data["files"][0]["error"].startswith("RuntimeError: NVRTC_ERROR_COMPILATION")


def test_the_ratios_table_from_the_stand_in_runs(tmp_path, stand_in_cupy):
    dc.run_device_check(tmp_path, quick=True, copy_bytes=1 << 20, dtypes=("float32", "bfloat16"), log=print)
    fc.run_fused_check(tmp_path, quick=True, copy_bytes=1 << 20, log=print)
    (tmp_path / "train_epoch.json").write_text(json.dumps({
        "samples": 1000, "features": 784, "sizes": [784, 8, 10], "epoch_seconds": 2.0,
        "gpudense_epochs_s": [2.0, 2.2], "torch_epochs_s": [1.0, 1.1], "ratio_gpudense_over_torch": 2.1 / 1.05}))
    text = gpu_report.ratios_markdown(tmp_path)
    assert "| 32x1024 | bfloat16 |" in text and "| 256x4096 | float32 |" in text
    assert "## Fused activation gradient" in text and "| tanh |" in text
    assert "not measured (no epilogue rows" in text  # quick mode times none
    assert "not measured (no layers.json)" in text
    assert "| 1,000 x 784, MLP 784-8-10 | 2.000, 2.200 | 1.000, 1.100 | 2.000 |" in text
    rows = json.loads((tmp_path / "device_check.json").read_text())["results"]
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    assert all(r["paired_ratio_vs_kernel"] > 0 for r in rows if r["method"] != dc.METHODS[0])
