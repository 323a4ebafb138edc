"""gpudense: a dense (fully-connected) layer for CUDA GPUs through CuPy, with a NumPy fallback.

    forward:   y  = x @ w + b                 (or y = act(x @ w + b): relu, gelu, tanh)
    backward:  dx = dy @ w.T,  dw = x.T @ dy,  db = dy summed over the batch

``w`` has shape ``(in_features, out_features)``; ``w[i, j]`` joins input ``i``
to neuron ``j``. ``import gpudense`` never imports CuPy, and changes nothing
(no environment variable, no thread, no NumPy state): the names below are
imported from their modules on first use, so the ``gpudense`` command can
set OpenBLAS's environment before NumPy loads.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_HOMES = {
    "Backend": "gpudense.backends",
    "BackendUnavailableError": "gpudense.backends",
    "GpudenseFallbackWarning": "gpudense.backends",
    "auto_backend_reason": "gpudense.backends",
    "get_backend": "gpudense.backends",
    "DenseActOutput": "gpudense.functional",
    "DenseGrads": "gpudense.functional",
    "dense_act_backward": "gpudense.functional",
    "dense_act_forward": "gpudense.functional",
    "dense_backward": "gpudense.functional",
    "dense_forward": "gpudense.functional",
    "Dense": "gpudense.layer",
    "ParamGrad": "gpudense.layer",
}

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "Dense",
    "DenseActOutput",
    "DenseGrads",
    "GpudenseFallbackWarning",
    "ParamGrad",
    "__version__",
    "auto_backend_reason",
    "dense_act_backward",
    "dense_act_forward",
    "dense_backward",
    "dense_forward",
    "get_backend",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use; a submodule (``gpudense.nn``) likewise."""
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"gpudense.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gpudense.{name}":
                raise
            raise AttributeError(f"module 'gpudense' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'gpudense' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
