"""The CUDA backend's former module path; everything lives in :mod:`gpudense.backends.cuda`."""

from gpudense.backends.cuda import *  # noqa: F401,F403
from gpudense.backends.cuda import __all__  # noqa: F401
