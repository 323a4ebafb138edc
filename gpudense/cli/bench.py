"""``gpudense bench``: the command line over :mod:`gpudense.benchmark`."""

from gpudense.benchmark import add_arguments, run  # noqa: F401
