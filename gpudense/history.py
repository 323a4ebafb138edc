"""What training reports: the :class:`History` of a run and the :class:`EpochStats` of each epoch.

:func:`gpudense.training.fit` returns the one and passes the other to its
``on_epoch`` callback; both are importable from :mod:`gpudense.training`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_HISTORY_KEYS = ("loss", "train_acc", "test_acc", "seconds")


@dataclass
class History:
    """Per-epoch results, lists indexed by epoch - 1.

    Attributes:
        loss: Mean training loss over each epoch.
        train_acc: Accuracy on the training batches during each epoch.
        test_acc: Accuracy on the test set at the end of each epoch.
        seconds: Wall time of each epoch's training (evaluation excluded).
    """

    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[float]]:
        """``{"loss": [...], "train_acc": [...], "test_acc": [...], "seconds": [...]}`` (copies)."""
        return {key: list(getattr(self, key)) for key in _HISTORY_KEYS}

    @classmethod
    def from_dict(cls, d: Any) -> "History":
        """A History from :meth:`as_dict`'s form (e.g. a checkpoint's ``extra["history"]``).

        Missing keys give empty lists; unknown keys are ignored.

        Raises:
            ValueError: ``d`` is not a dict of lists of numbers of one length (one entry per epoch).

        Example:
            >>> History.from_dict({"loss": [0.5, 0.25]}).loss
            [0.5, 0.25]
        """
        if not isinstance(d, dict) or not all(
            isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            for v in d.values()
        ):
            raise ValueError(f"a history must map names to lists of numbers; got {d!r:.80}")
        lengths = {key: len(d[key]) for key in _HISTORY_KEYS if key in d}
        if len(set(lengths.values())) > 1:
            got = ", ".join(f"{key} {n}" for key, n in lengths.items())
            raise ValueError(f"a history needs one entry per epoch in every list; got {got}")
        return cls(*(list(map(float, d.get(key, []))) for key in _HISTORY_KEYS))


@dataclass(frozen=True)
class EpochStats:
    """What :func:`~gpudense.training.fit` passes to ``on_epoch`` after each epoch.

    Attributes:
        epoch: The epoch just finished, counted from 1 (resumed runs included).
        epochs: The total, ``TrainConfig.epochs``.
        loss, train_acc, test_acc, seconds: As in :class:`History`.
        samples: Training samples per epoch.
    """

    epoch: int
    epochs: int
    loss: float
    train_acc: float
    test_acc: float
    seconds: float
    samples: int
