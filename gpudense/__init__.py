"""gpudense: a dense (fully-connected) layer for CUDA GPUs through CuPy, with a NumPy fallback.

    forward:   y  = x @ w + b                 (or y = act(x @ w + b): relu, gelu, tanh)
    backward:  dx = dy @ w.T,  dw = x.T @ dy,  db = dy summed over the batch

``w`` has shape ``(in_features, out_features)``; ``w[i, j]`` joins input ``i``
to neuron ``j``. ``import gpudense`` never imports CuPy.
"""

# Before anything imports NumPy (and so OpenBLAS): see gpudense/_blas.py.
from gpudense._blas import shorten_openblas_spin

shorten_openblas_spin()

from gpudense.backends import (  # noqa: E402
    Backend,
    BackendUnavailableError,
    GpudenseFallbackWarning,
    auto_backend_reason,
    get_backend,
)
from gpudense.functional import (  # noqa: E402
    DenseActOutput,
    DenseGrads,
    dense_act_backward,
    dense_act_forward,
    dense_backward,
    dense_forward,
)
from gpudense.layer import Dense, ParamGrad  # noqa: E402

__version__ = "0.1.0"

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
