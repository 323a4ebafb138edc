"""Checkpoints: a model's weights, optimizer state, epoch and RNG state in one ``.npz`` file.

Layout of the file (a plain NumPy ``.npz``, readable with ``allow_pickle=False``):

- ``meta``: a JSON string: ``{"format": "gpudense-checkpoint", "version": 2,
  "epoch": int, "model": {"sizes", "activation", "bias", "dtype"} or null,
  "optimizer": {"type", "hyperparams", "step", "param_steps", "slots"} or null,
  "rng": the ``numpy.random.Generator``'s ``bit_generator.state`` or null,
  "extra": {...}}`` (``param_steps``: the step count of each parameter that has
  stepped; ``slots``: the slot names, including ``master``), and, when some
  array is bfloat16, ``"raw_dtypes": {entry: "bfloat16"}``
- bfloat16 arrays (``ml_dtypes.bfloat16``, which ``np.savez`` would store as
  untyped ``V2`` bytes) are stored as their raw ``uint16`` bits and listed in
  ``raw_dtypes``; reading views them as bfloat16 again, bit for bit
- ``param/<name>``: each parameter (``param/0.w``, ``param/0.b``, ...), a NumPy array
  in the model's dtype, whatever backend the model was on;
- ``optim/<slot>/<name>``: the optimizer's per-parameter state (``optim/m/0.w``, ...;
  ``optim/master/<name>``: the float32 master copy of a float16 parameter).

Writing is atomic: the file is written to a temporary file in the same
directory, flushed and fsync'ed, then renamed over the target with
``os.replace`` and the directory fsync'ed, so an interrupted save (an error,
a signal) leaves the previous checkpoint (if any) intact and no temporary
file behind. A checkpoint is written only to a regular file or a new path:
a symbolic link is followed and the file it names is replaced (the link stays
a link); a directory, FIFO, socket or device at the path is refused
(:func:`check_target`). Reading opens the file read-only and
never changes it. Any unreadable, truncated, corrupt or mismatched file raises
:class:`CheckpointError` with the reason.

Example:
    >>> import numpy as np, tempfile, os
    >>> from gpudense.nn import MLP
    >>> from gpudense.optim import Adam
    >>> model = MLP([4, 8, 3], backend="numpy", rng=0); opt = Adam(model)
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> _ = save_checkpoint(path, model, opt, epoch=1, rng=np.random.default_rng(0))
    >>> ckpt = load_checkpoint(path); ckpt.epoch
    1
    >>> fresh = MLP([4, 8, 3], backend="numpy", rng=1)
    >>> ckpt.restore(fresh, Adam(fresh))
"""

from __future__ import annotations

import copy
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpudense._checkpoint_read import BF16 as _BF16
from gpudense._checkpoint_read import FORMAT, VERSION, read_checkpoint
from gpudense._checks import check_finite, check_optimizer_of
from gpudense._files import FileRefused, atomic_write, regular_target
from gpudense.backends import backend_of

__all__ = ["CheckpointError", "Checkpoint", "check_target", "load_checkpoint", "save_checkpoint"]

class CheckpointError(ValueError):
    """A checkpoint cannot be read, is corrupt or truncated, or does not fit the model."""


def _model_config(model: Any) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    return config() if callable(config) else None


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Any,
    optimizer: Any = None,
    *,
    epoch: int,
    rng: np.random.Generator | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and ``optimizer``, ``epoch``, ``rng``'s state) to ``path`` atomically.

    Args:
        path: Target file; written as given (no ``.npz`` appended): a
            regular file, a new path in an existing directory, or a symbolic
            link to one of these (see :func:`check_target`).
        model: Anything with ``param_grads()``; its ``config()`` (as
            :class:`~gpudense.nn.MLP` has) is stored when present.
        optimizer: An :class:`~gpudense.optim.Optimizer`, or None.
        epoch: Completed epochs, >= 0.
        rng: The generator whose state a resumed run must continue from
            (e.g. the one that shuffles batches); stored as JSON, not pickled.
        extra: JSON-serialisable data to keep alongside (e.g. the run's options
            and loss history).

    Returns:
        The path written.

    Raises:
        CheckpointError: ``path`` is (or links to) a directory, FIFO, socket
            or device; nothing is written.
        FileNotFoundError: the directory of ``path`` does not exist.
        OSError: the file cannot be written, e.g. a full disk (one line naming
            the file; the previous file is left as it was).
        TypeError, ValueError: bad arguments, or ``extra`` not a dict of JSON
            data (a NumPy scalar, a NaN or a tuple key is refused, naming ``extra``).
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int; got {epoch!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None; got {type(rng).__name__}")
    _check_extra(extra)
    to_numpy = model.backend.to_numpy if hasattr(model, "backend") else np.asarray
    arrays: dict[str, np.ndarray] = {
        f"param/{pg.name}": np.ascontiguousarray(to_numpy(pg.param)) for pg in model.param_grads()
    }
    raw_dtypes = {key: _BF16 for key, a in arrays.items() if a.dtype.name == _BF16}
    for key in raw_dtypes:
        arrays[key] = arrays[key].view(np.uint16)
    opt_meta = None
    if optimizer is not None:
        state = optimizer.state_dict()
        opt_meta = {
            "type": state["type"],
            "hyperparams": state["hyperparams"],
            "step": state["step"],
            "param_steps": state["param_steps"],
            "slots": sorted(state["slots"]),
        }
        for slot, named in state["slots"].items():
            for name, a in named.items():
                arrays[f"optim/{slot}/{name}"] = np.ascontiguousarray(a)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": int(epoch),
        "model": _model_config(model),
        "optimizer": opt_meta,
        "rng": None if rng is None else rng.bit_generator.state,
        "extra": extra or {},
    }
    if raw_dtypes:
        meta["raw_dtypes"] = raw_dtypes
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(check_target(path), lambda f: np.savez(f, **arrays), "checkpoint")
    return Path(path)


def _check_extra(extra: Any) -> None:
    """``extra`` must be None or a dict that JSON holds exactly (a load gives it back as it was)."""
    if extra is None:
        return
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict of JSON data or None; got {type(extra).__name__}")
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"extra must hold only JSON data (dict with str keys, list, str, int, float, bool, "
                        f"None; finite numbers): {exc}") from None


def check_target(path: str | os.PathLike[str]) -> Path:
    """The file that :func:`save_checkpoint` to ``path`` would replace, after checking it may.

    A checkpoint is written only to a regular file or a new path. A symbolic
    link (or a chain of them) is followed: the file it names is the one
    replaced, and the link stays a link. Call it before long work to fail
    early (``gpudense train`` checks ``--save`` before loading any data);
    :func:`save_checkpoint` checks again when it writes.

    Args:
        path: The checkpoint path as given.

    Returns:
        ``path`` itself, or the path its symbolic links lead to.

    Raises:
        CheckpointError: the path (or what it links to) is a directory, a
            FIFO, a socket or a device, or the links loop; one line naming
            the path and what is there.
        FileNotFoundError: the folder the file would go in does not exist.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> check_target(os.path.join(folder, "new.npz")).name
        'new.npz'
        >>> check_target(folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gpudense.checkpoint.CheckpointError: checkpoint target ... is a directory, not a regular file; ...
    """
    try:
        return regular_target(path, "checkpoint target")
    except FileRefused as exc:
        raise CheckpointError(str(exc)) from None


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read: plain NumPy arrays and JSON data.

    Attributes:
        path: The file it came from.
        epoch: Completed epochs.
        model_config: ``{"sizes", "activation", "bias", "dtype"}`` or None.
        params: ``{name: numpy array}``.
        optimizer_state: As ``Optimizer.state_dict()`` returns, or None.
        rng_state: A ``bit_generator.state`` dict, or None.
        extra: The ``extra`` dict given to :func:`save_checkpoint`.
    """

    path: Path
    epoch: int
    model_config: dict[str, Any] | None
    params: dict[str, np.ndarray]
    optimizer_state: dict[str, Any] | None
    rng_state: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)

    def restore(self, model: Any, optimizer: Any = None, rng: np.random.Generator | None = None) -> None:
        """Load this checkpoint into ``model`` (and ``optimizer``, ``rng``), after validating it.

        The model's configuration (sizes, activation, bias, dtype), the
        parameter names, shapes and dtypes, the optimizer's type, slots and
        state shapes, dtypes, hyper-parameter ranges and per-parameter step
        counts, and the generator type and state must all match, and every
        value must be finite (Adam's second moments >= 0); otherwise
        :class:`CheckpointError` names the first mismatch and nothing is
        changed: everything (the RNG state set on a copy of the generator)
        is checked, and the arrays copied onto the model's backend, before
        the model, the optimizer or the generator is touched.

        Raises:
            CheckpointError: the checkpoint does not fit, as above.
            ValueError: ``optimizer`` was built for another model (it would
                step that model's parameters, not ``model``'s).
            TypeError: ``rng`` is not a ``numpy.random.Generator``.
        """
        where = f"checkpoint {self.path}"
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator or None; got {type(rng).__name__}")
        config = _model_config(model)
        if self.model_config is not None and config is not None:
            for key in ("sizes", "activation", "bias", "dtype"):
                if self.model_config.get(key) != config.get(key):
                    raise CheckpointError(
                        f"{where} was saved for a model with {key}={self.model_config.get(key)!r}; "
                        f"this model has {key}={config.get(key)!r}"
                    )
        params = {pg.name: pg.param for pg in model.param_grads()}
        missing = sorted(set(params) - set(self.params))
        unexpected = sorted(set(self.params) - set(params))
        if missing or unexpected:
            raise CheckpointError(
                f"{where} does not fit the model: parameters missing {missing}, unexpected {unexpected}"
            )
        for name, p in params.items():
            a = self.params[name]
            if tuple(a.shape) != tuple(p.shape):
                raise CheckpointError(
                    f"{where}: parameter {name} has shape {tuple(a.shape)}, the model's has {tuple(p.shape)}"
                )
            if a.dtype != np.dtype(p.dtype):
                raise CheckpointError(f"{where}: parameter {name} has dtype {a.dtype}, the model's is {p.dtype}")
            _check_finite(where, f"param/{name}", a)
        if optimizer is not None:
            check_optimizer_of(optimizer, model)
        if optimizer is not None and self.optimizer_state is None:
            raise CheckpointError(f"{where} holds no optimizer state")
        if rng is not None:
            if self.rng_state is None:
                raise CheckpointError(f"{where} holds no RNG state")
            kind = type(rng.bit_generator).__name__
            if self.rng_state.get("bit_generator") != kind:
                raise CheckpointError(
                    f"{where}: RNG state is for {self.rng_state.get('bit_generator')!r}, the generator is {kind}"
                )
            try:  # on a copy: the caller's generator changes only once everything is known to load
                copy.deepcopy(rng.bit_generator).state = self.rng_state
            except (TypeError, ValueError, KeyError) as exc:
                raise CheckpointError(f"{where}: bad RNG state: {exc}") from exc
        prepared = None
        if optimizer is not None:
            try:
                prepared = optimizer.check_state_dict(self.optimizer_state)  # validates, copies; changes nothing
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{where}: {exc}") from exc
        backend = getattr(model, "backend", None) or backend_of(*params.values())
        on_backend = {name: backend.asarray(a) for name, a in self.params.items()}
        # Everything is validated and on the device: from here on nothing fails.
        if prepared is not None:
            optimizer.load_prepared(prepared)
        if hasattr(model, "load_state_dict"):
            model.load_state_dict(on_backend)
        else:
            _copy_params(model, on_backend)
        if rng is not None:
            rng.bit_generator.state = self.rng_state


def _copy_params(model: Any, params: dict[str, Any]) -> None:
    """Write ``params`` (already on the model's backend) into a model that has no ``load_state_dict``."""
    for pg in model.param_grads():
        pg.param[...] = params[pg.name]


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (read-only, ``allow_pickle=False``).

    Returns:
        A :class:`Checkpoint`; call its ``restore(model, optimizer, rng)``.

    Raises:
        CheckpointError: the file is missing or unreadable, is not an
            ``.npz``, is truncated or corrupt (an array header claiming more
            than its entry holds included), holds a value that is not finite,
            or lacks what a gpudense checkpoint holds. (A ``ValueError``, so
            ``gpudense train`` reports it on one line.)
    """
    path = Path(path)
    where = f"checkpoint {path}"
    try:
        with open(path, "rb") as f:
            meta, params, slots = read_checkpoint(f, where)
    except FileRefused as exc:
        raise CheckpointError(str(exc)) from None
    except FileNotFoundError as exc:
        raise CheckpointError(f"{where} does not exist") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {where}: {exc.strerror or exc}") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, NotImplementedError) as exc:
        raise CheckpointError(f"{where} is truncated or corrupt (not a readable .npz): {exc}") from exc
    opt = meta["optimizer"]
    optimizer_state = None
    if opt is not None:
        # A slot holds the parameters that have stepped (none before the first step);
        # Optimizer.check_state_dict checks that against param_steps.
        optimizer_state = {key: opt[key] for key in ("type", "hyperparams", "step", "param_steps")}
        optimizer_state["slots"] = {slot: slots.get(slot, {}) for slot in opt["slots"]}
    return Checkpoint(path=path, epoch=meta["epoch"], model_config=meta["model"], params=params,
                      optimizer_state=optimizer_state, rng_state=meta["rng"], extra=meta["extra"])


def _check_finite(where: str, name: str, a: np.ndarray) -> None:
    try:
        check_finite(name, a)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}; a checkpoint of a diverged or damaged run cannot be resumed") from None
