"""The kernel loader (gpudense.backends.cuda.loader), on the CPU.

The kernel file is found in a checkout and in an installed wheel, gets a
``#line`` directive, and takes the launch plan's constants from ``-D``
options that one function produces (the .cu file defines none of them).
The nvcc and host-C++ builds with these options are in test_kernels_compile.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpudense import activation_math
from gpudense.backends.cuda import plan
from gpudense.backends.cuda.loader import (
    ENTRY_POINTS,
    KERNEL_FILES,
    NVRTC_OPTIONS,
    _with_line_directive,
    kernel_defines,
    kernel_source,
    module_code,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("file", list(KERNEL_FILES))
def test_kernel_source_is_found_and_names_every_entry_point(file):
    source, path = kernel_source(file)
    assert Path(path).name == file and Path(path).is_file()
    for name in KERNEL_FILES[file]:
        assert f"{name}" in source
    code = _with_line_directive(source, path)
    assert code.startswith('#line 1 "') and code.splitlines()[0].endswith(f'{file}"')
    assert code.endswith(source)


def test_every_entry_point_belongs_to_one_file():
    assert len(ENTRY_POINTS) == len(set(ENTRY_POINTS)) == sum(len(v) for v in KERNEL_FILES.values())


@pytest.mark.parametrize("file", list(KERNEL_FILES))
def test_module_code_holds_each_header_once_with_line_directives(file):
    """What NVRTC compiles: every line of the file and its headers, no #include left, each header once."""
    code, path = module_code(file)
    source, _ = kernel_source(file)
    headers = re.findall(r'^#include "([^"]+)"$', source, re.M)
    assert headers, f"{file} includes no header"
    assert "#include" not in code and "#pragma once" not in code
    assert code.count('element_types.cuh"\n') == 1  # once, although column_sums.cuh includes it too
    for header in headers:
        text, hpath = kernel_source(header)
        assert f'#line 1 "{Path(hpath).as_posix()}"' in code
        for line in text.splitlines():
            if line.strip() and not line.startswith(("#include", "#pragma once")):
                assert line in code, f"{header}: {line!r} missing"
    # After a header, the file goes on at the line after its #include.
    first = headers[0]
    after = source.splitlines().index(f'#include "{first}"') + 2
    assert f'#line {after} "{Path(path).as_posix()}"' in code


def test_module_code_names_a_missing_header(monkeypatch):
    from gpudense.backends.cuda import loader

    real = loader.kernel_source
    monkeypatch.setattr(loader, "kernel_source",
                        lambda name: ('#include "nope.cuh"\n', "/x/k.cu") if name == "k.cu" else real(name))
    with pytest.raises(loader.KernelBuildError, match="nope.cuh"):
        module_code("k.cu")


def test_kernel_source_missing_file_names_where_it_looked():
    from gpudense.backends.cuda.loader import KernelBuildError

    with pytest.raises(KernelBuildError, match="no_such_kernel.cu"):
        kernel_source("no_such_kernel.cu")


def test_wheel_ships_the_kernels_and_an_installed_gpudense_finds_them(tmp_path):
    """Build the wheel from a copy of the tree, install it with --target, load the source there."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "gpudense", src / "gpudense", ignore=ignore)
    shutil.copytree(REPO / "kernels", src / "kernels", ignore=ignore)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
        check=True, env=env, cwd=tmp_path, capture_output=True,
    )
    (wheel,) = wheels.glob("gpudense-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.removeprefix("gpudense/kernels/") for n in names if n.startswith("gpudense/kernels/"))
    want = sorted(p.name for p in (REPO / "kernels").iterdir() if p.suffix in (".cu", ".cuh"))
    assert set(want) <= set(shipped) and "optim_update.cuh" in want, shipped
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, env=env, cwd=tmp_path, capture_output=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import gpudense; from gpudense.backends.cuda.loader import kernel_source;"
        "src, path = kernel_source('bias_grad.cu');"
        "print(gpudense.__file__); print(path); print('bias_grad_pass2_f16' in src)"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe, str(target)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    module_file, path, found = res.stdout.split()
    assert Path(module_file).resolve().is_relative_to(target.resolve()), module_file
    assert Path(path).resolve() == (target / "gpudense" / "kernels" / "bias_grad.cu").resolve()
    assert found == "True"


# --------------------------------------------------------------------------
# The plan's constants reach the kernel as -D options
# --------------------------------------------------------------------------


def _defines():
    """``{name: value}`` parsed from kernel_defines() (ints, or floats as C reads them)."""
    found = {}
    for option in kernel_defines():
        match = re.fullmatch(r"-D(GPUDENSE_[A-Z_]+)=(\d+|\d+\.\d+(?:e-?\d+)?)", option)
        assert match, f"not a -DNAME=VALUE option: {option!r}"
        value = match.group(2)
        found[match.group(1)] = float(value) if "." in value else int(value)
    return found


def test_kernel_defines_are_the_plans_constants():
    assert _defines() == {
        "GPUDENSE_BLOCK": plan.BLOCK,
        "GPUDENSE_UNROLL": plan.UNROLL,
        "GPUDENSE_VECTOR_BYTES": plan.VECTOR_BYTES,
        "GPUDENSE_GELU_C": activation_math.GELU_C,
        "GPUDENSE_GELU_A": activation_math.GELU_A,
        "GPUDENSE_GELU_CLIP": activation_math.GELU_CLIP,
    }
    assert _defines()["GPUDENSE_BLOCK"] == 256 and _defines()["GPUDENSE_UNROLL"] == 4
    # The decimal text reads back as the very double activation_math computes with.
    assert _defines()["GPUDENSE_GELU_C"] == (2 / 3.141592653589793) ** 0.5


@pytest.mark.parametrize("file", list(KERNEL_FILES))
def test_kernel_file_defines_none_of_them_and_stops_without_them(file):
    code, _ = module_code(file)
    used = set(re.findall(r"\bGPUDENSE_[A-Z0-9_]+\b", code)) & set(_defines())
    assert used, file
    for name in used:
        assert not re.search(rf"^\s*#\s*define\s+{name}\b", code, re.M), f"{name} is mirrored in {file}"
        guard = re.search(rf"^#ifndef {name}\n#error \"{name} is not defined[^\n]*\"\n#endif$", code, re.M)
        assert guard, f"no #error for a missing {name} in {file}"


def test_every_constant_the_kernel_expects_is_passed():
    """A GPUDENSE_ macro the files use but do not define must come from kernel_defines()."""
    source = "".join(module_code(file)[0] for file in KERNEL_FILES)
    used = set(re.findall(r"\bGPUDENSE_[A-Z0-9_]+\b", source))
    defined_here = set(re.findall(r"^\s*#\s*define\s+(GPUDENSE_[A-Z0-9_]+)", source, re.M))
    optional = {"GPUDENSE_HOST_EMULATION"}  # set by the host emulation in the tests only
    assert used - defined_here - optional == set(_defines())


def test_nvrtc_options_carry_the_defines_and_line_info():
    assert NVRTC_OPTIONS == ("--generate-line-info", *kernel_defines())
