"""The CUDA backend module's CPU-side parts: library facts, device description, the package face.

No GPU needed: CuPy is hidden or replaced by a stand-in where a test needs
it to behave in a particular way.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import SimpleNamespace

import pytest

import gpudense.backends.cuda as cuda
from gpudense.backends import BackendUnavailableError
from gpudense.backends.cuda import CupyBackend, library_facts


def _fake_cupy(monkeypatch, *, runtime=13020, driver=13000, version="99.0.0"):
    """A stand-in ``cupy`` whose runtime reports the given versions (an exception is raised)."""
    def answer(v):
        def call():
            if isinstance(v, Exception):
                raise v
            return v
        return call

    fake = type(sys)("cupy")
    fake.__version__ = version
    fake.cuda = SimpleNamespace(runtime=SimpleNamespace(runtimeGetVersion=answer(runtime),
                                                        driverGetVersion=answer(driver)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


def test_library_facts_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    assert library_facts() == {"cupy": "not installed"}


def test_library_facts_report_versions_as_major_minor(monkeypatch):
    _fake_cupy(monkeypatch, runtime=13020, driver=12080)
    assert library_facts() == {"cupy": "99.0.0", "cuda_runtime": "13.2", "cuda_driver": "12.8"}


def test_library_facts_without_a_driver(monkeypatch):
    _fake_cupy(monkeypatch, runtime=12060, driver=0)
    assert library_facts() == {"cupy": "99.0.0", "cuda_runtime": "12.6",
                               "cuda_driver": "none (no NVIDIA driver)"}


def test_library_facts_report_a_broken_cuda_instead_of_raising(monkeypatch):
    _fake_cupy(monkeypatch, runtime=RuntimeError("libcudart.so.13: cannot open shared object file"))
    facts = library_facts()
    assert facts == {"cupy": "99.0.0",
                     "cuda_runtime": "unknown (libcudart.so.13: cannot open shared object file)"}


def test_library_facts_of_the_installed_cupy():
    facts = library_facts()
    if importlib.util.find_spec("cupy") is None:
        assert facts == {"cupy": "not installed"}
    else:
        import cupy

        assert facts["cupy"] == cupy.__version__
        assert set(facts) in ({"cupy", "cuda_runtime", "cuda_driver"}, {"cupy", "cuda_runtime"})


def test_info_collect_takes_the_library_facts_from_the_backend(monkeypatch, fresh_backends):
    from gpudense.backends.facts import collect

    monkeypatch.setenv("GPUDENSE_BACKEND", "numpy")
    _fake_cupy(monkeypatch, runtime=13020, driver=13000)
    facts = collect()
    assert list(facts)[:9] == ["gpudense", "backend", "reason", "python", "numpy", "platform",
                               "cupy", "cuda_runtime", "cuda_driver"]
    assert (facts["cupy"], facts["cuda_runtime"], facts["cuda_driver"]) == ("99.0.0", "13.2", "13.0")
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert collect()["cupy"] == "not installed"


def test_describe_names_the_current_device():
    class Device:
        id = 1

    props = {"name": b"NVIDIA H200", "major": 9, "minor": 0, "multiProcessorCount": 132}
    backend = CupyBackend.__new__(CupyBackend)  # no CuPy, no GPU: a stand-in for the calls describe makes
    backend.xp = SimpleNamespace(cuda=SimpleNamespace(
        Device=Device, runtime=SimpleNamespace(getDeviceProperties=lambda i: props if i == 1 else None)))
    facts = backend.describe()
    assert facts["device"] == "1: NVIDIA H200 (sm_90, 132 SMs)"
    assert set(facts) == {"device", "nvtx"}


@pytest.mark.parametrize("hide_cupy", [False, True])
def test_the_package_imports_without_cupy(hide_cupy):
    """Importing gpudense.backends.cuda imports no CuPy; it works where CuPy is absent."""
    code = (
        "import sys\n"
        + ("sys.modules['cupy'] = None\n" if hide_cupy else "")
        + "import gpudense.backends.cuda as c\n"
        "print(sys.modules.get('cupy', 'absent'))\n"
        "plan = c.bias_grad_plan(10, 3, itemsize=4, ld=3, ptr=0, n_sm=2)\n"
        "import numpy as np\n"
        "print(plan.grid1[0] >= 1)\n"
        "print(c.module_code('bias_grad.cu')[1].endswith('bias_grad.cu'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["None" if hide_cupy else "absent", "True", "True"]


# -- why CuPy cannot be used: no driver at all, or one too old ------------------------------------


class _CudaRuntimeError(RuntimeError):
    pass


def _cupy_without_a_device(monkeypatch, *, driver, runtime=13000):
    """A stand-in ``cupy`` whose device count fails as CuPy's does without a working driver."""
    fake = _fake_cupy(monkeypatch, runtime=runtime, driver=driver, version="14.2.0")

    def count():
        raise _CudaRuntimeError(
            "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")

    fake.cuda.runtime.getDeviceCount = count
    return fake


def test_no_driver_at_all_says_no_nvidia_driver_found(monkeypatch):
    _cupy_without_a_device(monkeypatch, driver=0)
    with pytest.raises(BackendUnavailableError) as info:
        CupyBackend()
    message = str(info.value)
    assert "no NVIDIA driver found" in message and "insufficient" not in message
    assert message.startswith("CuPy 14.2.0 is installed but no CUDA device is usable: ")
    assert "\n" not in message


def test_a_driver_too_old_for_the_runtime_says_so(monkeypatch):
    _cupy_without_a_device(monkeypatch, driver=12080, runtime=13000)
    with pytest.raises(BackendUnavailableError) as info:
        CupyBackend()
    message = str(info.value)
    assert "the NVIDIA driver supports CUDA up to 12.8 but this CuPy needs CUDA 13.0" in message
    assert "no NVIDIA driver found" not in message


def test_another_failure_keeps_cupys_words(monkeypatch):
    fake = _cupy_without_a_device(monkeypatch, driver=13000, runtime=13000)

    def count():
        raise _CudaRuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake.cuda.runtime.getDeviceCount = count
    with pytest.raises(BackendUnavailableError, match="cudaErrorNoDevice: no CUDA-capable device"):
        CupyBackend()


def test_the_skip_reason_here_names_the_missing_driver(fresh_backends):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed here")
    try:
        driver = cupy.cuda.runtime.driverGetVersion()
    except Exception as exc:  # a CUDA install too broken to answer
        pytest.skip(f"the CUDA runtime does not answer: {exc}")
    if driver != 0:
        pytest.skip("an NVIDIA driver is installed here")
    from gpudense.backends import get_backend

    with pytest.raises(BackendUnavailableError, match="no NVIDIA driver found"):
        get_backend("cupy")


def test_without_a_driver_library_auto_does_not_import_cupy():
    import ctypes
    import subprocess
    import sys

    pytest.importorskip("cupy", reason="CuPy is not installed here")
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        pass
    else:
        pytest.skip("an NVIDIA driver library is installed here")
    code = ("import sys, warnings; warnings.simplefilter('ignore'); import gpudense; "
            "from gpudense.backends import auto_backend_reason; "
            "print(gpudense.get_backend('auto').name, 'cupy' in sys.modules); print(auto_backend_reason()[1])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "GPUDENSE_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    first, reason = out.splitlines()[:2]
    assert first == "numpy False"  # fell back without importing CuPy
    import cupy

    assert f"CuPy {cupy.__version__} is installed but no CUDA device is usable: no NVIDIA driver found" in reason
