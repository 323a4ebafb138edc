"""Weights as ``.safetensors``: an :class:`~gpudense.nn.MLP` to and from PyTorch's layout.

The file holds one tensor per parameter, named as PyTorch names the
parameters of ``nn.Sequential(nn.Linear, act, nn.Linear, act, ..., nn.Linear)``:
``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ``"2.bias"``, ... (layer ``k``
of the MLP is module ``2k``; the activations between have no parameters).

**The layout.** gpudense's ``w`` has shape ``(in_features, out_features)``
and a layer computes ``y = x @ w + b``; ``nn.Linear``'s ``weight`` has shape
``(out_features, in_features)`` and computes ``y = x @ weight.T + bias``. So
``weight = w.T`` (stored C-contiguous) and ``bias = b``. Tensors keep the
model's dtype (float16, bfloat16, float32 or float64, as ``F16``/``BF16``/
``F32``/``F64``). The header's metadata holds ``"format": "pt"`` and
``"gpudense"``: the model's configuration as JSON (sizes, activation, bias,
dtype), so :func:`load_safetensors` rebuilds the same model; a file saved
from PyTorch (``safetensors.torch.save_file(seq.state_dict(), path)``) has
none, and the activation is then given.

Loading into PyTorch::

    seq = torch.nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    seq.load_state_dict(safetensors.torch.load_file("model.safetensors"))

The ``safetensors`` package is imported only here, when called
(``pip install "gpudense[safetensors]"``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gpudense._checks import bfloat16_dtype, check_finite
from gpudense._files import FileRefused, atomic_write, regular_target
from gpudense.activations import check_activation
from gpudense.nn import MLP

__all__ = ["load_safetensors", "save_safetensors", "torch_names"]

#: safetensors' dtype names of the dtypes gpudense computes in.
_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_KEY = re.compile(r"^(\d+)\.(weight|bias)$")


def _safetensors() -> Any:
    try:
        import safetensors
    except ImportError as exc:
        raise ImportError(f"safetensors files need the safetensors package ({exc})") from exc
    return safetensors


def torch_names(model: MLP) -> dict[str, np.ndarray]:
    """``model``'s parameters in ``nn.Sequential``'s names and ``nn.Linear``'s layout, as host arrays.

    Example:
        >>> state = torch_names(MLP([3, 4, 2], backend="numpy", rng=0))
        >>> {k: v.shape for k, v in state.items()}
        {'0.weight': (4, 3), '0.bias': (4,), '2.weight': (2, 4), '2.bias': (2,)}
    """
    out: dict[str, np.ndarray] = {}
    for name, a in model.state_dict().items():
        module, kind = name.split(".")
        if kind == "w":
            out[f"{module}.weight"] = np.ascontiguousarray(a.T)
        else:
            out[f"{module}.bias"] = np.ascontiguousarray(a)
    return out


def save_safetensors(model: MLP, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s weights to ``path`` as ``.safetensors`` (PyTorch's names and layout), atomically.

    Returns:
        The path written.

    Raises:
        ImportError: the safetensors package is missing.
        ValueError: ``path`` is a directory, FIFO, socket or device.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> _ = save_safetensors(MLP([3, 2], backend="numpy", rng=0), path)
        >>> load_safetensors(path, backend="numpy").sizes
        [3, 2]
    """
    _safetensors()
    import safetensors.numpy

    try:
        target = regular_target(path, "safetensors target")
    except FileRefused as exc:
        raise ValueError(str(exc)) from None
    metadata = {"format": "pt", "gpudense": json.dumps(model.config())}
    data = safetensors.numpy.save(torch_names(model), metadata=metadata)
    atomic_write(target, lambda f: f.write(data), "safetensors file")
    return Path(path)


def load_safetensors(path: str | os.PathLike[str], *, activation: str | None = None,
                     backend: Any = "auto") -> MLP:
    """The :class:`~gpudense.nn.MLP` whose weights ``path`` holds (saved by gpudense or from a torch Sequential).

    Args:
        path: A ``.safetensors`` file with tensors ``"0.weight"``,
            ``"0.bias"``, ``"2.weight"``, ... (biases all present or all
            absent), of one dtype: float16, bfloat16, float32 or float64.
        activation: The hidden layers' activation (``"relu"``, ``"gelu"`` for
            ``nn.GELU(approximate="tanh")``, ``"tanh"``). Default: the one in
            the file's gpudense metadata, else ``"relu"``. Given and different
            from the metadata's, it is an error.
        backend: Where the model lives.

    Raises:
        ImportError: the safetensors package is missing.
        ValueError: a file that is not ``.safetensors``, names or shapes that
            are not such a Sequential, a dtype gpudense does not compute in,
            values that are not finite (one line naming the file).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> _ = save_safetensors(MLP([3, 5, 2], activation="tanh", backend="numpy", rng=0), path)
        >>> load_safetensors(path, backend="numpy").activation
        'tanh'
    """
    st = _safetensors()
    where = f"safetensors file {path}"
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{where} is a directory") from None
    try:
        entries = st.deserialize(raw)
        with st.safe_open(os.fspath(path), framework="np") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # SafetensorError, from a file that is no safetensors file
        raise ValueError(f"{where} is not a readable .safetensors file: {str(exc).splitlines()[0]}") from None
    saved = _saved_config(where, metadata)
    tensors: dict[int, dict[str, np.ndarray]] = {}
    dtypes = set()
    for name, info in entries:
        match = _KEY.match(name)
        if match is None:
            raise ValueError(f"{where}: tensor {name!r} is not named as an nn.Sequential of nn.Linear "
                             "(\"0.weight\", \"0.bias\", \"2.weight\", ...)")
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{where}: tensor {name} has dtype {info['dtype']}; expected one of F16, BF16, F32, F64")
        dtype = bfloat16_dtype() if info["dtype"] == "BF16" else np.dtype(_DTYPES[info["dtype"]])
        a = np.frombuffer(info["data"], dtype=dtype).reshape(info["shape"])
        check_finite(f"{where}: tensor {name}", a.astype(np.float32) if info["dtype"] == "BF16" else a)
        tensors.setdefault(int(match.group(1)), {})[match.group(2)] = a
        dtypes.add(dtype)
    if not tensors:
        raise ValueError(f"{where} holds no tensors")
    if len(dtypes) > 1:
        raise ValueError(f"{where}: tensors of several dtypes ({', '.join(sorted(d.name for d in dtypes))}); "
                         "expected one")
    modules = sorted(tensors)
    if modules != list(range(0, 2 * len(modules), 2)):
        raise ValueError(f"{where}: expected nn.Linear modules at 0, 2, 4, ... (an activation between each); "
                         f"found modules {modules}")
    sizes, has_bias = [], set()
    for k in modules:
        layer = tensors[k]
        if "weight" not in layer:
            raise ValueError(f"{where}: module {k} has no weight")
        w = layer["weight"]
        if w.ndim != 2 or (sizes and w.shape[1] != sizes[-1]):
            raise ValueError(f"{where}: {k}.weight has shape {tuple(w.shape)}; expected (out_features, "
                             f"{sizes[-1] if sizes else 'in_features'})")
        if not sizes:
            sizes.append(int(w.shape[1]))
        sizes.append(int(w.shape[0]))
        has_bias.add("bias" in layer)
        if "bias" in layer and tuple(layer["bias"].shape) != (w.shape[0],):
            raise ValueError(f"{where}: {k}.bias has shape {tuple(layer['bias'].shape)}; expected ({w.shape[0]},)")
    if len(has_bias) > 1:
        raise ValueError(f"{where}: some layers have a bias and some none; expected all or none")
    act = activation if activation is not None else (saved or {}).get("activation", "relu")
    act = check_activation(act)
    if saved is not None and activation is not None and saved.get("activation") != act:
        raise ValueError(f"{where} was saved from a model with activation {saved.get('activation')!r}; "
                         f"got activation {act!r}")
    model = MLP(sizes, activation=act, bias=has_bias.pop(), dtype=dtypes.pop(), backend=backend, rng=0)
    state = {}
    for k in modules:
        state[f"{k}.w"] = np.ascontiguousarray(tensors[k]["weight"].T)
        if "bias" in tensors[k]:
            state[f"{k}.b"] = tensors[k]["bias"]
    model.load_state_dict(state)
    return model


def _saved_config(where: str, metadata: dict[str, str]) -> dict[str, Any] | None:
    text = metadata.get("gpudense")
    if text is None:
        return None
    try:
        config = json.loads(text)
    except ValueError:
        raise ValueError(f"{where}: metadata 'gpudense' is not JSON") from None
    if not isinstance(config, dict):
        raise ValueError(f"{where}: metadata 'gpudense' must be a JSON object; got {text:.60}")
    return config
