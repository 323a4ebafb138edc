"""``gpudense train``'s checkpoints as the command line sees them: the history a ``--resume``
checkpoint brings back, and the line that says where the last one is when a run is stopped."""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import Any

from gpudense import training
from gpudense._checkpoint_read import FORMAT, read_meta
from gpudense.checkpoint import CheckpointError


def data_shape(ds: Any) -> dict[str, int]:
    """What a checkpoint records of the data it was trained on, beyond the options that named them.

    Example:
        >>> from gpudense.data import make_synthetic
        >>> data_shape(make_synthetic(50, 4, 3, seed=0))
        {'train': 40, 'test': 10, 'features': 4, 'classes': 3}
    """
    return {"train": int(ds.x_train.shape[0]), "test": int(ds.x_test.shape[0]),
            "features": int(ds.n_features), "classes": int(ds.n_classes)}


def check_data_shape(path: str, ckpt: Any, ds: Any) -> None:
    """Refuse to resume a checkpoint on data of another shape than it recorded (the same --data path may
    hold other data by now); a checkpoint that recorded none is not checked.

    Raises:
        CheckpointError: one line naming the checkpoint and both shapes.
    """
    saved, now = ckpt.extra.get("data_shape"), data_shape(ds)
    if saved is not None and saved != now:
        raise CheckpointError(f"checkpoint {path} was trained on data of {saved}; the data given now are {now}")


def _epoch_of(path: str, counted: int) -> int:
    """The epoch of the checkpoint at ``path`` (only its meta is read), or ``counted`` where it cannot be read."""
    try:
        with open(path, "rb") as f:
            epoch = read_meta(f, path).get("epoch")
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError, KeyError, NotImplementedError):
        return counted
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= counted else counted


def check_not_foreign(option: str, path: str) -> None:
    """Refuse to let ``option`` replace a file at ``path`` that is not a gpudense checkpoint.

    A new path, an empty file and a gpudense checkpoint (of any version) may
    be replaced; anything else (a data file, another program's ``.npz``, a
    damaged file) is kept unless the user says ``--overwrite``. Only the
    file's ``meta`` entry is read, bounded as checkpoints are.

    Raises:
        ValueError: one line naming the option, the path and what is there.

    Example:
        >>> import os, tempfile
        >>> notes = os.path.join(tempfile.mkdtemp(), "notes.txt")
        >>> with open(notes, "w") as f:
        ...     _ = f.write("hello")
        >>> check_not_foreign("--save", notes)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --save ...notes.txt: the file there is not a gpudense checkpoint (it is truncated or corrupt: ...
    """
    try:
        if os.path.getsize(path) == 0:
            return
        with open(path, "rb") as f:
            found = read_meta(f, "it")["format"]
        reason = "" if found == FORMAT else f"its format is {found!r}"
    except FileNotFoundError:
        return
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError, KeyError, NotImplementedError) as exc:
        reason = str(exc).removeprefix("it: ") or type(exc).__name__
    if reason:
        raise ValueError(f"{option} {path}: the file there is not a gpudense checkpoint ({reason}); give "
                         "another path, or --overwrite to replace it")


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

    The epoch is read from the file itself where it can be: a signal that
    comes after a save has replaced the file but before the run has counted
    it would otherwise name the epoch before.

    Args:
        last: ``(path, epoch)`` of the last complete checkpoint (written by
            this run, or the one it resumed), or None.
        save: The ``--save`` path, or None.

    Example:
        >>> stopped_note(("run.npz", 3), "run.npz")
        'the last complete checkpoint is run.npz (epoch 3)'
    """
    if last is not None:
        return f"the last complete checkpoint is {last[0]} (epoch {_epoch_of(*last)})"
    if save:
        state = "is unchanged" if os.path.lexists(save) else "was not created"
        return f"no checkpoint was written ({save} {state})"
    return "no checkpoint was written (no --save given)"
