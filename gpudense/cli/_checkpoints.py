"""``gpudense train``'s checkpoints as the command line sees them: the history a ``--resume``
checkpoint brings back, and the line that says where the last one is when a run is stopped."""

from __future__ import annotations

import os
from typing import Any

from gpudense import training
from gpudense.checkpoint import CheckpointError


def saved_history(path: str, ckpt: Any) -> training.History:
    """The history a checkpoint holds in ``extra["history"]`` (empty if none), checked against its epoch.

    ``gpudense train`` saves every list of a :class:`~gpudense.training.History`,
    one entry per epoch, so lists of different lengths, a missing list or
    more entries than the checkpoint's epochs mean a damaged checkpoint;
    they are refused when the checkpoint is read, before any data are loaded.

    Raises:
        CheckpointError: one line naming the checkpoint and what is wrong.
    """
    if "history" not in ckpt.extra:
        return training.History()
    saved = ckpt.extra["history"]
    try:
        history = training.History.from_dict(saved)
    except ValueError as exc:
        reason = str(exc).removeprefix("a history ")
        raise CheckpointError(f"checkpoint {path}: extra 'history' {reason}") from None
    keys = list(history.as_dict())
    missing = [key for key in keys if key not in saved]
    if missing:  # a part of a history would not plot
        raise CheckpointError(f"checkpoint {path}: extra 'history' needs the lists {', '.join(keys)}; "
                              f"got no {', '.join(missing)}")
    if len(history.loss) > ckpt.epoch:
        raise CheckpointError(
            f"checkpoint {path}: extra 'history' holds {len(history.loss)} epochs of history but the "
            f"checkpoint is at epoch {ckpt.epoch}"
        )
    return history


def stopped_note(last: tuple[str, int] | None, save: str | None) -> str:
    """What the line of a stopped run says about checkpoints.

    Args:
        last: ``(path, epoch)`` of the last complete checkpoint (written by
            this run, or the one it resumed), or None.
        save: The ``--save`` path, or None.

    Example:
        >>> stopped_note(("run.npz", 3), "run.npz")
        'the last complete checkpoint is run.npz (epoch 3)'
    """
    if last is not None:
        return f"the last complete checkpoint is {last[0]} (epoch {last[1]})"
    if save:
        state = "is unchanged" if os.path.lexists(save) else "was not created"
        return f"no checkpoint was written ({save} {state})"
    return "no checkpoint was written (no --save given)"
