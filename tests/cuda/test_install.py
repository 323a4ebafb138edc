"""The GPU install path, without a GPU: the CUDA libraries CuPy loads, and `make train`'s choice of extra.

* In the test environment (the cuda13 extra, on Linux) CuPy's cuBLAS and
  NVRTC modules load, and :func:`cuda_libraries` finds cuBLAS, cuBLASLt,
  NVRTC and the 16-bit headers in CuPy's CUDA major version; NVRTC compiling
  the kernels from these wheels is tests/cuda/test_nvrtc.py.
* A library that cannot be loaded is named, with the ``pip install`` that
  brings it, by ``gpudense info``, by ``backend="cupy"``'s error and by
  ``backend="auto"``'s one-line reason.
* ``tools/cuda_extra.sh`` reads the driver's CUDA version from a stand-in
  ``nvidia-smi`` (CUDA 12, CUDA 13, an old driver, a failing one, none), and
  ``make -n train`` shows the extra installed and the backend used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpudense.backends.cuda import libraries
from gpudense.backends.cuda.libraries import CudaLibrary, cuda_libraries, missing_libraries, pip_fix

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "cuda_extra.sh"


def _installed_cupy():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed: pip install 'gpudense[cuda13]' brings it")
    pytest.importorskip("cuda.pathfinder", reason="cuda-pathfinder (a CuPy 14 dependency) is not installed")
    return cupy


# -- the libraries of the installed CuPy -------------------------------------------------------------


def test_cupys_cublas_and_nvrtc_modules_load():
    cupy = _installed_cupy()
    from cupy.cuda import cublas  # ImportError where libcublas or libcublasLt cannot be loaded
    from cupy_backends.cuda.libs import nvrtc

    assert callable(cublas.create)
    major, minor = nvrtc.getVersion()
    assert major == cupy.cuda.runtime.runtimeGetVersion() // 1000 and minor >= 0


def test_every_library_the_gpu_path_loads_is_found_in_cupys_cuda_version():
    cupy = _installed_cupy()
    major, libs = cuda_libraries(cupy)
    assert major == cupy.cuda.runtime.runtimeGetVersion() // 1000
    assert [lib.name for lib in libs] == ["cuBLAS", "cuBLASLt", "NVRTC", "cuda_fp16.h/cuda_bf16.h"]
    assert [lib for lib in libs if not lib.found] == []
    for lib in libs:
        assert lib.version.split(".")[0] == str(major), lib
    cublas, cublaslt, nvrtc, headers = libs
    assert Path(cublas.where.split(", ")[0]).name == f"libcublas.so.{major}"
    assert Path(cublaslt.where.split(", ")[0]).name == f"libcublasLt.so.{major}"
    assert Path(nvrtc.where.split(", ")[0]).name == f"libnvrtc.so.{major}"
    assert (Path(headers.where) / "cuda_fp16.h").is_file() and (Path(headers.where) / "cuda_bf16.h").is_file()
    assert missing_libraries(cupy) is None


def test_gpudense_info_lists_each_library():
    cupy = _installed_cupy()
    out = subprocess.run([sys.executable, "-m", "gpudense", "info"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = dict(line.split(None, 1) for line in out.splitlines())
    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    assert lines["cuBLAS"].startswith(f"{major}.") and f"libcublas.so.{major}" in lines["cuBLAS"]
    assert lines["NVRTC"].startswith(f"{major}.") and f"libnvrtc.so.{major}" in lines["NVRTC"]
    assert lines["cuda_fp16.h/cuda_bf16.h"].startswith(f"{major}.")


# -- a missing library, named with its fix --------------------------------------------------------


def _without(monkeypatch, *names):
    """Make cuda.pathfinder fail for ``names``, as it does where their wheels are not installed."""
    from cuda.pathfinder import DynamicLibNotFoundError

    load = libraries._load

    def failing(libname):
        if libname in names:
            raise DynamicLibNotFoundError(f'Failure finding "lib{libname}.so": No such file')
        return load(libname)

    monkeypatch.setattr(libraries, "_load", failing)


def test_a_missing_cublas_is_named_with_the_pip_install_that_brings_it(monkeypatch):
    cupy = _installed_cupy()
    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    _without(monkeypatch, "cublas", "cublasLt")
    _, libs = cuda_libraries(cupy)
    cublas = libs[0]
    assert not cublas.found and cublas.version == ""
    assert cublas.line(major) == (f'missing (libcublas.so.{major} not found); '
                                  f'pip install "cuda-toolkit[cublas]=={major}.*"')
    line = missing_libraries(cupy)
    assert line.startswith(f"CUDA {major} libraries are missing: cuBLAS (")
    assert "cuBLASLt (" in line and "NVRTC" not in line
    assert line.endswith(f'; pip install "cuda-toolkit[cublas]=={major}.*"') and "\n" not in line


def test_missing_headers_are_named(monkeypatch, tmp_path):
    cupy = _installed_cupy()
    import cuda.pathfinder

    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    (tmp_path / "cuda_fp16.h").write_text("")
    monkeypatch.setattr(cuda.pathfinder, "find_nvidia_header_directory", lambda name: str(tmp_path))
    headers = cuda_libraries(cupy)[1][-1]
    assert not headers.found
    assert headers.where == f"cuda_bf16.h not in {tmp_path}"
    assert missing_libraries(cupy).endswith(f'; pip install "cuda-toolkit[cudart]=={major}.*"')


def test_headers_of_another_cuda_version_count_as_missing(monkeypatch, tmp_path):
    cupy = _installed_cupy()
    import cuda.pathfinder

    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    for name in ("cuda_fp16.h", "cuda_bf16.h"):
        (tmp_path / name).write_text("")
    (tmp_path / "cuda_runtime_api.h").write_text(f"#define CUDART_VERSION {(major - 1) * 1000 + 80}\n")
    monkeypatch.setattr(cuda.pathfinder, "find_nvidia_header_directory", lambda name: str(tmp_path))
    headers = cuda_libraries(cupy)[1][-1]
    assert not headers.found
    assert headers.where == f"CUDA {major - 1}.8 headers in {tmp_path}; this CuPy needs CUDA {major}"


def test_a_library_of_another_cuda_major_counts_as_missing(monkeypatch):
    """NVRTC 12 (the test extra's) offered to a CuPy built for CUDA 13 is reported, not used."""
    cupy = _installed_cupy()
    if cupy.cuda.runtime.runtimeGetVersion() // 1000 != 13:
        pytest.skip("needs a CuPy built for CUDA 13")
    nvrtc12 = _site_file("nvidia/cuda_nvrtc/lib/libnvrtc.so.12")
    if nvrtc12 is None:
        pytest.skip("the nvidia-cuda-nvrtc-cu12 wheel (test extra, Linux) is not installed")
    load = libraries._load
    monkeypatch.setattr(libraries, "_load", lambda name: SimpleNamespace(abs_path=str(nvrtc12),
                                                                          found_via="site-packages")
                        if name == "nvrtc" else load(name))
    nvrtc = cuda_libraries(cupy)[1][2]
    assert not nvrtc.found
    assert nvrtc.where.startswith("CUDA 12.") and nvrtc.where.endswith("this CuPy needs CUDA 13")


def test_pip_fix_names_each_component_once():
    missing = [CudaLibrary("cuBLAS", False, "", "x", "cublas"), CudaLibrary("cuBLASLt", False, "", "x", "cublas"),
               CudaLibrary("NVRTC", False, "", "x", "nvrtc")]
    assert pip_fix(missing, 12) == 'pip install "cuda-toolkit[cublas,nvrtc]==12.*"'


def _cupy_with_a_device(monkeypatch, cupy):
    """The installed CuPy, its runtime reporting one device (no GPU is needed past the device count)."""
    fake = type(sys)("cupy")
    fake.__version__ = "14.2.0"
    runtime = SimpleNamespace(getDeviceCount=lambda: 1, runtimeGetVersion=cupy.cuda.runtime.runtimeGetVersion,
                              driverGetVersion=lambda: 13000)
    fake.cuda = SimpleNamespace(runtime=runtime)
    monkeypatch.setitem(sys.modules, "cupy", fake)


def test_backend_cupy_names_a_missing_library_at_selection(monkeypatch, fresh_backends):
    cupy = _installed_cupy()
    from gpudense.backends import BackendUnavailableError, get_backend

    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    _without(monkeypatch, "nvrtc")
    _cupy_with_a_device(monkeypatch, cupy)
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("cupy")
    message = str(info.value)
    assert message.startswith(f"CuPy 14.2.0 is installed but CUDA {major} libraries are missing: NVRTC (")
    assert message.endswith(f'pip install "cuda-toolkit[nvrtc]=={major}.*"') and "\n" not in message


def test_backend_auto_says_so_in_its_one_line_reason(monkeypatch, fresh_backends):
    cupy = _installed_cupy()
    from gpudense.backends import GpudenseFallbackWarning, auto_backend_reason

    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    _without(monkeypatch, "cublas", "cublasLt")
    _cupy_with_a_device(monkeypatch, cupy)
    with pytest.warns(GpudenseFallbackWarning, match="cuBLAS"):
        name, reason = auto_backend_reason()
    assert name == "numpy" and "\n" not in reason
    assert f'pip install "cuda-toolkit[cublas]=={major}.*"' in reason and reason.endswith("; using NumPy")


def _site_file(relative):
    """``relative`` under a site-packages folder of this Python, or None."""
    for folder in sys.path:
        path = Path(folder) / relative
        if path.is_file():
            return path
    return None


# -- make train: which extra, which backend --------------------------------------------------------


def _bin_with(tmp_path, smi):
    """A PATH folder holding the tools the script and make need, and ``nvidia-smi`` as given (or none)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("sh", "sed", "head", "make"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not on PATH")
        (folder / tool).symlink_to(found)
    if smi is not None:
        (folder / "nvidia-smi").write_text("#!/bin/sh\n" + smi)
        (folder / "nvidia-smi").chmod(0o755)
    return str(folder)


def _smi_header(cuda):
    return ("echo '+---------------------------------------------------------------------------+'\n"
            f"echo '| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: {cuda}     |'\n")


SMI = {
    "cuda13": _smi_header("13.0"),
    "cuda12": _smi_header("12.9"),
    "old": _smi_header("11.8"),
    "failing": "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9\n",
    "none": None,
}


@pytest.mark.parametrize("driver, extra", [("cuda13", "cuda13"), ("cuda12", "cuda12"), ("old", ""),
                                           ("failing", ""), ("none", "")])
def test_the_script_names_the_extra_of_the_drivers_cuda_version(tmp_path, driver, extra):
    path = _bin_with(tmp_path, SMI[driver])
    proc = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": path}, check=True)
    assert proc.stdout.strip() == extra
    assert ("CUDA 11" in proc.stderr) == (driver == "old")


def _make_train(tmp_path, smi, *args):
    path = _bin_with(tmp_path, smi)
    venv = tmp_path / "venv"  # no stamps there: make -n shows the install
    proc = subprocess.run(["make", "-n", "--no-print-directory", "train", f"VENV={venv}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": path})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, str(venv)


@pytest.mark.parametrize("driver", ["cuda12", "cuda13"])
def test_make_train_installs_the_drivers_extra_and_trains_on_cupy(tmp_path, driver):
    out, venv = _make_train(tmp_path, SMI[driver])
    assert f'{venv}/bin/python -m pip install --quiet -e ".[train,{driver}]"' in out
    assert out.rstrip().endswith(f"{venv}/bin/python -m gpudense train --backend cupy")


@pytest.mark.parametrize("driver", ["none", "failing", "old"])
def test_make_train_without_a_usable_driver_is_the_cpu_training(tmp_path, driver):
    out, venv = _make_train(tmp_path, SMI[driver])
    assert f'{venv}/bin/python -m pip install --quiet -e ".[train]"' in out
    assert out.rstrip().endswith(f"{venv}/bin/python -m gpudense train")


def test_make_train_gpu_0_forces_the_cpu(tmp_path):
    out, venv = _make_train(tmp_path, SMI["cuda13"], "GPU=0")
    assert '".[train]"' in out and 'train,cuda13' not in out and '--backend cupy' not in out
    assert out.rstrip().endswith(f"{venv}/bin/python -m gpudense train")


def test_make_train_gpu_names_the_extra(tmp_path):
    out, venv = _make_train(tmp_path, None, "GPU=cuda12")
    assert '".[train,cuda12]"' in out and out.rstrip().endswith("gpudense train --backend cupy")


def test_make_refuses_an_unknown_gpu_value(tmp_path):
    path = _bin_with(tmp_path, None)
    proc = subprocess.run(["make", "-n", "train", "GPU=1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PATH": path})
    assert proc.returncode != 0
    assert "make train: GPU=1: expected auto, 0, cuda12 or cuda13" in proc.stderr
    assert "pip install" not in proc.stdout
