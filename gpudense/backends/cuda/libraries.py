"""The CUDA libraries CuPy's GPU path loads: each found (where, which version) or missing (and the fix).

Besides CuPy itself, gpudense's GPU path needs:

* cuBLAS and cuBLASLt, which cuBLAS loads (the matrix products);
* NVRTC, which compiles ``kernels/*.cu`` and CuPy's own elementwise kernels;
* the headers ``cuda_fp16.h`` and ``cuda_bf16.h``, which CuPy's kernels
  include; CuPy passes NVRTC the CUDA runtime's include directory (the
  runtime itself is linked into CuPy 14, and
  :func:`~gpudense.backends.cuda.library_facts` reports its version).

CuPy 14 finds the libraries and that directory with ``cuda.pathfinder``
(Python wheels first, then conda, the system's search path, then
``CUDA_PATH``/``CUDA_HOME``); :func:`cuda_libraries` asks the same finder,
so what it reports is what CuPy will load. The versions come from each
library's own version call through ``ctypes``. None of this needs a GPU or
an NVIDIA driver.

A missing library is reported with the ``pip install`` that brings it: the
component of NVIDIA's ``cuda-toolkit`` wheels for CuPy's CUDA major version
(``gpudense[cuda12]`` and ``gpudense[cuda13]`` bring them all).
"""

from __future__ import annotations

import ctypes
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The headers CuPy's kernels include, from the CUDA runtime's include directory.
HEADERS = ("cuda_fp16.h", "cuda_bf16.h")


@dataclass(frozen=True)
class CudaLibrary:
    """One CUDA library (or header set) CuPy's GPU path needs, as found on this machine.

    Attributes:
        name: What it is called in messages (``"cuBLAS"``, ``"NVRTC"``, ...).
        found: Whether it is there, in the CUDA major version CuPy was built for.
        version: Its version (``"13.1.0"``), or ``""`` where it was not found.
        where: Its file or directory and how it was found, or why it is missing.
        component: The ``cuda-toolkit`` wheel extra that brings it (``"cublas"``).

    Example:
        >>> lib = CudaLibrary("cuBLAS", False, "", "not found", "cublas")
        >>> lib.line(13)
        'missing (not found); pip install "cuda-toolkit[cublas]==13.*"'
    """

    name: str
    found: bool
    version: str
    where: str
    component: str

    def line(self, cuda_major: int) -> str:
        """The library in one line, as ``gpudense info`` prints it."""
        if self.found:
            return f"{self.version} ({self.where})"
        return f"missing ({self.where}); {pip_fix([self], cuda_major)}"


def pip_fix(missing: list[CudaLibrary], cuda_major: int) -> str:
    """The ``pip install`` command that brings the ``missing`` libraries for CUDA ``cuda_major``.

    Example:
        >>> pip_fix([CudaLibrary("NVRTC", False, "", "not found", "nvrtc")], 12)
        'pip install "cuda-toolkit[nvrtc]==12.*"'
    """
    components = ",".join(sorted({lib.component for lib in missing}))
    return f'pip install "cuda-toolkit[{components}]=={cuda_major}.*"'


def cuda_libraries(cupy: Any) -> tuple[int, list[CudaLibrary]]:
    """``(cuda_major, libraries)``: cuBLAS, cuBLASLt, NVRTC and the 16-bit headers.

    Loads each library the way CuPy does (through ``cuda.pathfinder``),
    which needs no GPU. A library of another CUDA major version than CuPy's
    counts as missing.

    Args:
        cupy: The imported ``cupy`` module.

    Returns:
        CuPy's CUDA major version (from its runtime) and one
        :class:`CudaLibrary` per library, in the order above.

    Example:
        >>> from types import SimpleNamespace  # a stand-in for a CuPy built for CUDA 13.2
        >>> cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(runtimeGetVersion=lambda: 13020)))
        >>> major, libs = cuda_libraries(cupy)
        >>> major, [lib.name for lib in libs]
        (13, ['cuBLAS', 'cuBLASLt', 'NVRTC', 'cuda_fp16.h/cuda_bf16.h'])
    """
    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    libs = [
        _shared_library("cuBLAS", "cublas", "cublas", major, _cublas_version),
        _shared_library("cuBLASLt", "cublasLt", "cublas", major, _cublaslt_version),
        _shared_library("NVRTC", "nvrtc", "nvrtc", major, _nvrtc_version),
        _headers(major),
    ]
    return major, libs


def missing_libraries(cupy: Any) -> str | None:
    """One line naming the CUDA libraries CuPy's GPU path lacks and the fix; None where none is missing.

    Example:
        >>> from types import SimpleNamespace  # a CuPy for a CUDA 99 that no machine has
        >>> cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(runtimeGetVersion=lambda: 99000)))
        >>> line = missing_libraries(cupy)
        >>> line.startswith("CUDA 99 libraries are missing: cuBLAS (")
        True
        >>> line.split("; ")[-1]
        'pip install "cuda-toolkit[cublas,cudart,nvrtc]==99.*"'
    """
    if getattr(cupy.cuda.runtime, "is_hip", False):  # CuPy for ROCm loads none of these
        return None
    major, libs = cuda_libraries(cupy)
    missing = [lib for lib in libs if not lib.found]
    if not missing:
        return None
    names = ", ".join(f"{lib.name} ({lib.where})" for lib in missing)
    return f"CUDA {major} libraries are missing: {names}; {pip_fix(missing, major)}"


def _load(libname: str) -> Any:
    """cuda.pathfinder's ``LoadedDL`` for ``libname`` (as CuPy loads it); raises where it is not found."""
    from cuda.pathfinder import load_nvidia_dynamic_lib

    return load_nvidia_dynamic_lib(libname)


def _shared_library(name: str, libname: str, component: str, major: int, version_of: Any) -> CudaLibrary:
    try:
        loaded = _load(libname)
    except ImportError as exc:  # cuda.pathfinder, a CuPy 14 dependency, is missing
        return CudaLibrary(name, False, "", f"cuda.pathfinder cannot be imported ({exc})", component)
    except Exception:  # DynamicLibNotFoundError (its message lists every folder searched)
        soname = f"lib{libname}.so.{major}" if sys.platform.startswith("linux") else libname
        return CudaLibrary(name, False, "", f"{soname} not found", component)
    path = loaded.abs_path or libname
    try:
        version = version_of(ctypes.CDLL(path))
    except (OSError, AttributeError) as exc:
        return CudaLibrary(name, False, "", f"{path} does not answer its version call ({exc})", component)
    where = f"{path}, {loaded.found_via}"
    if int(version.split(".")[0]) != major:
        return CudaLibrary(name, False, "", f"CUDA {version} at {where}; this CuPy needs CUDA {major}", component)
    return CudaLibrary(name, True, version, where, component)


def _cublas_version(lib: ctypes.CDLL) -> str:
    parts = []
    for prop in (0, 1, 2):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL (libraryPropertyType)
        value = ctypes.c_int()
        if lib.cublasGetProperty(prop, ctypes.byref(value)) != 0:
            raise OSError("cublasGetProperty failed")
        parts.append(value.value)
    return ".".join(map(str, parts))


def _cublaslt_version(lib: ctypes.CDLL) -> str:
    lib.cublasLtGetVersion.restype = ctypes.c_size_t
    v = lib.cublasLtGetVersion()  # major * 10000 + minor * 100 + patch
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


def _nvrtc_version(lib: ctypes.CDLL) -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
        raise OSError("nvrtcVersion failed")
    return f"{major.value}.{minor.value}"


def _headers(major: int) -> CudaLibrary:
    """The 16-bit headers in the CUDA runtime's include directory, as CuPy finds it."""
    name = "/".join(HEADERS)
    try:
        from cuda.pathfinder import find_nvidia_header_directory

        folder = find_nvidia_header_directory("cudart")
    except Exception as exc:  # cuda.pathfinder missing or failing
        return CudaLibrary(name, False, "", f"cuda.pathfinder failed: {exc}", "cudart")
    if folder is None:
        return CudaLibrary(name, False, "", "no CUDA include directory found", "cudart")
    lacking = [h for h in HEADERS if not (Path(folder) / h).is_file()]
    if lacking:
        return CudaLibrary(name, False, "", f"{', '.join(lacking)} not in {folder}", "cudart")
    version = _header_version(Path(folder) / "cuda_runtime_api.h")
    if version is None or int(version.split(".")[0]) != major:
        return CudaLibrary(name, False, "", f"CUDA {version or '(version unknown)'} headers in {folder}; "
                           f"this CuPy needs CUDA {major}", "cudart")
    return CudaLibrary(name, True, version, folder, "cudart")


def _header_version(header: Path) -> str | None:
    """``"13.5"`` from ``#define CUDART_VERSION 13050``; None where the header says no version."""
    try:
        text = header.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r"#define\s+CUDART_VERSION\s+(\d+)", text)
    return None if m is None else f"{int(m.group(1)) // 1000}.{int(m.group(1)) % 1000 // 10}"
