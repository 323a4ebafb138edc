"""``gpudense train``: the command line over :mod:`gpudense.train`."""

from gpudense.train import add_arguments, run  # noqa: F401
