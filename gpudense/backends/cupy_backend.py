"""An alias of :mod:`gpudense.backends.cuda`: the same public names, importable under this module path too."""

from gpudense.backends.cuda import *  # noqa: F401,F403
from gpudense.backends.cuda import __all__  # noqa: F401
