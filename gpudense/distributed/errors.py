"""The errors of a data-parallel run that every rank raises at the same point.

:class:`CollectiveError` marks an error that every rank raises at the same
point (the ranks disagree on the training set-up, rank 0 cannot read the
checkpoint): the processes can end normally, none waits for another.
"""


class CollectiveError(RuntimeError):
    """An error raised on every rank at the same point, so no rank is left waiting for another."""


class MismatchError(CollectiveError, ValueError):
    """The ranks do not run the same training (their set-up fingerprints differ); raised on every rank."""
