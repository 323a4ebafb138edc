"""The CuPy stand-in (tests/cupy_standin) pinned to the real CuPy installed here, which imports without a GPU.

Names: every name the stand-in gives exists in CuPy. Signatures: the stand-in's
callables take CuPy's parameters, by name, order and default (read from
``inspect`` or, for CuPy's Cython functions, from the signature line of their
docstring; ``cupy.cublas`` and ``cupyx.distributed`` need cuBLAS and NCCL to
import, so their source is parsed). The NCCL dtype table: the stand-in's
``cupyx.distributed`` table is the one in CuPy's ``_nccl_comm.py``, and every
NCCL constant the stand-in defines is one CuPy's NCCL module exports.
Skipped, with the reason, where CuPy is not installed.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed: nothing to pin the stand-in to")

import cupy_standin  # noqa: E402
from cupy_standin import device  # noqa: E402

CUPY_DIR = Path(importlib.util.find_spec("cupy").submodule_search_locations[0])
SITE = CUPY_DIR.parent


def _params(obj):
    """``[(name, default or None, kind), ...]`` of a callable: inspect, else its docstring's first line."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        line = (obj.__doc__ or "").splitlines()[0]
        args = re.sub(r"^[\w.]+\((.*)\).*$", r"\1", line)
        args = re.sub(r"\b(?:str|tuple|bool|int|size_t|object|intptr_t)\s+(?=\w)", "", args)
        args = args.replace("\\*", "*")
        fn = ast.parse(f"def f({args}): pass").body[0].args
        names = [(a.arg, None, "p") for a in fn.posonlyargs + fn.args]
        for i, d in enumerate(fn.defaults):
            k = len(names) - len(fn.defaults) + i
            names[k] = (names[k][0], ast.literal_eval(d), "p")
        names += [(a.arg, None if d is None else ast.literal_eval(d), "k") for a, d in zip(fn.kwonlyargs,
                                                                                          fn.kw_defaults)]
        if fn.kwarg:
            names.append((fn.kwarg.arg, None, "**"))
        return [n for n in names if n[0] != "self"]
    out = []
    for p in sig.parameters.values():
        if p.name == "self":
            continue
        kind = {p.VAR_KEYWORD: "**", p.KEYWORD_ONLY: "k"}.get(p.kind, "p")
        default = None if p.default is p.empty else p.default
        out.append((p.name, default, kind))
    return out


def _source_function(path, name, cls=None):
    """The parameters of ``cls.name`` (or module-level ``name``) in a Python source file, parsed."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = tree.body
    if cls is not None:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    fn = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == name).args
    names = [a.arg for a in fn.args]
    defaults = [None] * (len(names) - len(fn.defaults)) + [ast.unparse(d) for d in fn.defaults]
    return [(n, d) for n, d in zip(names, defaults) if n not in ("self", "cls")]


standin = cupy_standin.modules()["cupy"]

PAIRS = [
    ("cupy.RawModule", lambda: cupy.RawModule, lambda: standin.RawModule),
    ("cupy.ElementwiseKernel", lambda: cupy.ElementwiseKernel, lambda: standin.ElementwiseKernel),
    ("cupy.cuda.Device", lambda: cupy.cuda.Device, lambda: device.Device),
    ("cupy.cuda.Stream", lambda: cupy.cuda.Stream, lambda: device.Stream),
    ("cupy.cuda.Event", lambda: cupy.cuda.Event, lambda: device.Event),
    ("cupy.cuda.get_elapsed_time", lambda: cupy.cuda.get_elapsed_time, lambda: device.get_elapsed_time),
    ("cupy.cuda.get_current_stream", lambda: cupy.cuda.get_current_stream, lambda: device.cuda.get_current_stream),
    ("cupy.cuda.nvtx.RangePush", lambda: cupy.cuda.nvtx.RangePush, lambda: device.nvtx.RangePush),
    ("cupy.asnumpy", lambda: cupy.asnumpy, lambda: standin.asnumpy),
    ("cupy.asarray", lambda: cupy.asarray, lambda: standin.asarray),
    ("cupy.ascontiguousarray", lambda: cupy.ascontiguousarray, lambda: standin.ascontiguousarray),
    ("cupy.empty", lambda: cupy.empty, lambda: standin.empty),
    ("cupy.zeros", lambda: cupy.zeros, lambda: standin.zeros),
]


@pytest.mark.parametrize("name, real, stand_in", PAIRS, ids=[p[0] for p in PAIRS])
def test_signature_is_cupys(name, real, stand_in):
    want = [(n, d, k) for n, d, k in _params(real())]
    got = [(n, d, k) for n, d, k in _params(stand_in())]
    assert got == want, f"{name}: stand-in {got}, CuPy {want}"


def test_every_name_of_the_stand_in_is_cupys():
    import cupy.cuda

    public = [n for n in dir(standin) if not n.startswith("_")]
    missing = [n for n in public if not hasattr(cupy, n) and importlib.util.find_spec(f"cupy.{n}") is None]
    assert not missing, f"the stand-in's cupy has names CuPy lacks: {missing}"
    missing = [n for n in dir(device.cuda) if not n.startswith("_") and not hasattr(cupy.cuda, n)
               and importlib.util.find_spec(f"cupy.cuda.{n}") is None]
    assert not missing, f"the stand-in's cupy.cuda has names CuPy lacks: {missing}"
    runtime = [n for n in dir(device.runtime) if not n.startswith("_")]
    assert [n for n in runtime if not hasattr(cupy.cuda.runtime, n)] == []
    import cupyx

    assert [n for n in dir(device.cupyx) if not n.startswith("_") and not hasattr(cupyx, n)
            and importlib.util.find_spec(f"cupyx.{n}") is None] == []
    stream = [n for n in dir(device.Stream) if not n.startswith("_") and callable(getattr(device.Stream, n))]
    assert [n for n in stream if not hasattr(cupy.cuda.Stream, n)] == []


def test_cublas_gemm_takes_cupys_parameters():
    want = _source_function(CUPY_DIR / "cublas.py", "gemm")
    got = [(p.name, None if p.default is p.empty else repr(p.default))
           for p in inspect.signature(device.gemm).parameters.values()]
    assert got == want


def test_nccl_backend_takes_cupys_parameters():
    path = SITE / "cupyx" / "distributed" / "_nccl_comm.py"
    init = _source_function(path, "__init__", "NCCLBackend")
    assert [n for n, _ in init] == [p for p in inspect.signature(device.NCCLBackend).parameters]
    for method in ("all_reduce", "broadcast"):
        want = [n for n, _ in _source_function(path, method, "_DenseNCCLCommunicator")][1:]  # after comm
        got = list(inspect.signature(getattr(device.NCCLBackend, method)).parameters)[1:]
        assert got == want, method


def test_nccl_dtype_table_is_cupys():
    """cupyx.distributed's table, as CuPy 14 writes it: no bfloat16 (the reason the engine passes NCCL's own types)."""
    tree = ast.parse((SITE / "cupyx" / "distributed" / "_nccl_comm.py").read_text(encoding="utf-8"))
    table = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", None) == "_nccl_dtypes" for t in n.targets)
                 and isinstance(n.value, ast.Dict) and n.value.keys)
    want = {ast.literal_eval(k): getattr(device.nccl, v.attr) for k, v in zip(table.keys, table.values)}
    assert device._nccl_dtypes == want
    assert "E" not in want and not any(k == "bfloat16" for k in want)


def test_nccl_constants_are_cupys():
    """Each NCCL_* name of the stand-in is one CuPy's NCCL module exports (read from the compiled module)."""
    lib = next((SITE / "cupy_backends" / "cuda" / "libs").glob("nccl*.so"), None)
    if lib is None:
        pytest.skip("CuPy's compiled NCCL module is not in this installation")
    data = lib.read_bytes()
    names = [n for n in dir(device.nccl) if n.startswith("NCCL_")]
    assert "NCCL_BFLOAT16" in names
    assert [n for n in names if n.encode() not in data] == []
