"""``gpudense bench``: options, their checks before the sweep, the table and JSON it writes.

No timing is asserted anywhere: only that the command computes what it says
from the samples it took, and writes what it promises.
"""

from __future__ import annotations

import argparse
import json

import pytest

from gpudense.benchmark import config as cfg
from gpudense.benchmark import report
from gpudense.benchmark.machine import busy_warning as BUSY_WARNING
from gpudense.benchmark.torch_linear import torch_importable
from gpudense.cli import bench as bench_cli
from gpudense.cli import main


def test_smoke_run_through_main_writes_valid_json(tmp_path, monkeypatch, fresh_backends):
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    out = tmp_path / "out.json"
    table = tmp_path / "table.md"
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--threads", "1",
               "--json", str(out), "--table", str(table)])
    assert rc == 0
    doc = json.loads(out.read_text())
    report.check_document(doc)
    assert doc["settings"]["backend"] == "numpy"
    assert doc["settings"]["threads"] == 1
    stages = {r["stage"] for r in doc["rows"]}
    assert set(cfg.STAGES + ("db.sum", "db.ones")) <= stages
    for r in doc["rows"]:
        assert len(r["samples_s"]) == cfg.REPEATS["smoke"]
        assert all(v > 0 for v in r["samples_s"])  # real timings of real calls
    assert doc["ceilings"]["copy"]["gbps"] > 0
    assert "float32" in doc["ceilings"]["matmul"]
    text = table.read_text()
    assert "| tiny | 8x4x3 | float32 | step |" in text
    # the command line is recorded; the BLAS pools ran at --threads
    assert doc["command"][:2] == ["gpudense", "bench"] and "--smoke" in doc["command"]
    blas = [p for p in doc["environment"]["blas"] if p.get("user_api") == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)


def test_plot_is_written(tmp_path, monkeypatch, fresh_backends):
    pytest.importorskip("matplotlib", reason="matplotlib is in the bench extra")
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    png = tmp_path / "p.png"
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--no-torch",
               "--threads", "1", "--shapes", "tiny", "--plot", str(png)])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_option_is_a_one_line_error(capsys, fresh_backends):
    rc = main(["bench", "--smoke", "--backend", "numpy", "--shapes", "2x3", "--no-progress"])
    assert rc == 1
    assert "BATCHxINxOUT" in capsys.readouterr().err


def test_argv_of_round_trips_through_the_parser():
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    argv = ["--backend", "numpy", "--shapes", "small,2x3x4", "--repeats", "7", "--threads", "1",
            "--quick", "--no-torch", "--seed", "5", "--json", "o.json"]
    args = parser.parse_args(argv)
    again = parser.parse_args(bench_cli.argv_of(args))
    assert vars(again) == vars(args)
    assert "--json" not in bench_cli.argv_of(args, drop=("json",))


def test_config_of_maps_the_options():
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["--backend", "numpy", "--shapes", "small,2x3x4", "--dtypes", "float16",
                              "--repeats", "7", "--warmup", "0", "--threads", "1", "--quick",
                              "--smoke", "--no-torch", "--seed", "5"])
    assert bench_cli.config_of(args) == cfg.BenchConfig(
        backend="numpy", mode="smoke", shapes=("small", "2x3x4"), dtypes=("float16",), repeats=7,
        warmup=0, threads=1, torch=False, seed=5)
    assert bench_cli.config_of(parser.parse_args(["--quick"])).mode == "quick"
    assert bench_cli.config_of(parser.parse_args([])) == cfg.BenchConfig()


# -- option checks: at once, one line, before the sweep ----------------------------------------

def _no_sweep(*args, **kwargs):
    raise AssertionError("the sweep ran although an option was bad")


@pytest.mark.parametrize("argv, what", [
    (["--repeats", "0"], "argument --repeats: expected an integer >= 1; got '0'"),
    (["--repeats", "x"], "argument --repeats: expected an integer >= 1; got 'x'"),
    (["--threads", "0"], "argument --threads: expected an integer >= 1; got '0'"),
    (["--threads", "-1"], "argument --threads: expected an integer >= 1; got '-1'"),
    (["--warmup", "-1"], "argument --warmup: expected an integer >= 0; got '-1'"),
])
def test_bad_counts_are_rejected_by_the_parser_on_one_line(argv, what, capsys, monkeypatch):
    monkeypatch.setattr(bench_cli, "sweep", _no_sweep)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--smoke", "--backend", "numpy", "--no-progress"] + argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"gpudense bench: error: {what}")


def test_zero_warmup_and_explicit_repeats_are_kept():
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["--warmup", "0", "--repeats", "1", "--threads", "1"])
    assert (args.warmup, args.repeats, args.threads) == (0, 1, 1)


@pytest.mark.parametrize("argv, what", [
    (["--dtypes", "float8"], "dtypes: expected names from"),
    (["--seed", "-1"], "seed must be an int >= 0; got -1"),
    (["--shapes", "transformer", "--quick"], "BATCHxINxOUT"),
    (["--dtypes", "tf32"], "tf32 needs the cupy backend"),
])
def test_bad_values_are_one_line_errors(argv, what, capsys, monkeypatch, fresh_backends):
    if "tf32" not in argv:
        monkeypatch.setattr(bench_cli, "sweep", _no_sweep)
    rc = main(["bench", "--backend", "numpy", "--no-progress", "--threads", "1"] + argv)
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpudense bench: error: ") and what in err


@pytest.mark.parametrize("name", ["p.pdf", "p", "p.png.txt"])
def test_plot_path_not_png_fails_before_the_sweep(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_cli, "sweep", _no_sweep)
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress",
               "--plot", str(tmp_path / name)])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--plot: expected a path ending in .png" in err


@pytest.mark.parametrize("flag", ["--json", "--table", "--plot"])
def test_output_under_a_file_fails_before_the_sweep(flag, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_cli, "sweep", _no_sweep)
    (tmp_path / "afile").write_text("x")
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress",
               flag, str(tmp_path / "afile" / "out.png")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{flag} {tmp_path / 'afile' / 'out.png'}: {tmp_path / 'afile'} is not a directory" in err


def test_output_that_is_a_folder_fails_before_the_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_cli, "sweep", _no_sweep)
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--json", str(tmp_path)])
    assert rc == 1
    assert "--json: expected a file path" in capsys.readouterr().err


def test_missing_output_folders_are_refused_before_the_sweep(tmp_path, monkeypatch, capsys):
    paths = {flag: tmp_path / flag.strip("-") / "sub" / f"out.{ext}"
             for flag, ext in (("--json", "json"), ("--table", "md"), ("--plot", "png"))}
    seen = {}

    def fake_sweep(config, **kwargs):
        seen.update({flag: p.parent.is_dir() for flag, p in paths.items()})
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(bench_cli, "sweep", fake_sweep)
    argv = ["bench", "--smoke", "--backend", "numpy", "--no-progress"]
    for flag, p in paths.items():
        argv += [flag, str(p)]
    assert main(argv) == 1
    assert seen == {}  # the sweep never started
    err = capsys.readouterr().err
    assert err == f"gpudense bench: error: --json {paths['--json']}: directory {paths['--json'].parent} does not exist\n"
    assert not any(tmp_path.iterdir())  # no folder was created


def test_the_sweep_gets_the_filled_in_configuration(monkeypatch, capsys, fresh_backends):
    got = {}

    def fake_sweep(config, **kwargs):
        got.update(config=config, **kwargs)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(bench_cli, "sweep", fake_sweep)
    assert main(["bench", "--quick", "--backend", "numpy", "--no-progress", "--no-torch"]) == 1
    c = got["config"]
    assert (c.backend, c.mode, c.repeats, c.warmup, c.torch) == ("numpy", "quick", 10, 1, False)
    assert c.threads == cfg.default_threads() and c.shapes == tuple(cfg.SHAPES["cpu-quick"])
    assert got["command"] == ["gpudense", "bench", "--backend", "numpy", "--quick", "--no-torch",
                              "--no-progress", "--seed", "0"]
    assert callable(got["progress"])


# -- the real --quick CPU sweep: "a --quick CPU run in CI" -------------------------

def test_quick_cpu_run_writes_a_valid_document(tmp_path, monkeypatch, fresh_backends):
    """The sweep a new user runs with ``gpudense bench --quick --json out.json`` on a CPU.

    Tens of seconds on 2 cores: the real --quick shapes, repeats and ceiling sizes.
    Nothing about the times is asserted, only that every promised row and field is there.
    """
    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    torch_ok = torch_importable()
    out = tmp_path / "quick.json"
    argv = ["bench", "--quick", "--backend", "numpy", "--no-progress", "--json", str(out)]
    if not torch_ok:
        argv.append("--no-torch")  # CI has no torch
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    report.check_document(doc)
    s = doc["settings"]
    assert s["mode"] == "quick" and s["backend"] == "numpy" and s["dtypes"] == ["float32"]
    assert s["repeats"] == cfg.REPEATS["quick"] and s["threads"] >= 1
    assert {k: tuple(v) for k, v in s["shapes"].items()} == cfg.SHAPES["cpu-quick"]
    sizes = cfg.CEILING_SIZES["cpu-quick"]
    copy = doc["ceilings"]["copy"]
    assert copy["bytes"] == sizes["copy_bytes"] and copy["threads"] == s["threads"]
    assert copy["gbps"] > 0 and len(copy["samples_s"]) == 2 * cfg.REPEATS["quick"]
    assert doc["ceilings"]["matmul"]["float32"]["n"] == sizes["matmul_n"]
    assert doc["ceilings"]["matmul"]["float32"]["tflops"] > 0
    want = set(cfg.STAGES + ("db.sum", "db.ones") + (("torch.step",) if torch_ok else ()))
    for name, dims in cfg.SHAPES["cpu-quick"].items():
        rows = [r for r in doc["rows"] if r["shape"] == name]
        assert {r["stage"] for r in rows} == want, name
        for r in rows:
            assert (r["batch"], r["n_in"], r["n_out"]) == dims
            assert len(r["samples_s"]) == cfg.REPEATS["quick"]
            assert all(v > 0 for v in r["samples_s"])  # real timings of real calls
            assert r["frac_bw"] > 0 and r["gbps"] > 0
        step = next(r for r in rows if r["stage"] == "step")
        assert ("torch.step" in step["ratios"]) == torch_ok


@pytest.mark.parametrize("load,warned", [(7.5, True), (0.0, False)])
def test_a_busy_machine_is_warned_of_before_the_sweep(load, warned, monkeypatch, capsys, fresh_backends):
    from gpudense.benchmark import machine

    monkeypatch.setattr(machine, "busy_warning", BUSY_WARNING)  # the real one, which conftest turns off
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    def sweep_seen(*args, **kwargs):
        err = capsys.readouterr().err
        assert ("gpudense bench: warning: the machine is busy: load average 7.50 over the last minute on 2 cores"
                in err) is warned, err
        raise RuntimeError("stop after the check")

    monkeypatch.setattr(bench_cli, "sweep", sweep_seen)
    rc = main(["bench", "--smoke", "--backend", "numpy", "--no-progress", "--threads", "1"])
    assert rc == 1
    assert "stop after the check" in capsys.readouterr().err
