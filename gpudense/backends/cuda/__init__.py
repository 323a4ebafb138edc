"""The CUDA backend: CuPy arrays, cuBLAS products and the bias-gradient RawKernel.

Imported only when asked for (``get_backend("cupy")`` or ``"auto"``). Importing
this package imports no CuPy, so the launch plan, its NumPy emulation and the
kernel-source loader can be used and tested on a machine without a GPU.
"""

from gpudense.backends.cuda.backend import *  # noqa: F401,F403
from gpudense.backends.cuda.backend import __all__  # noqa: F401
