"""The arrays a forward pass keeps for its backward pass, and the optional check that they stay unchanged.

A :class:`~gpudense.layer.Dense` layer keeps a reference to its input ``x``
(and, with an activation, to its output or pre-activation); the activation
blocks keep their output (ReLU, Tanh) or input (GELU). Nothing is copied: the
backward pass reads the arrays as they are when it runs. The rule is the
one of every framework that saves tensors by reference:

    **Do not change an array in place between the forward pass that used it
    and the backward pass.** ``y = layer(x); x[:] = 5; layer.backward(dy)``
    computes ``dw`` from the new ``x`` and gives a wrong gradient without an
    error. Change ``x`` after ``backward``, or pass a copy to the forward
    pass (``layer(x.copy())``).

Checking this on every step would cost a pass over every saved array at the
forward pass and another at the backward pass (a version counter such as
PyTorch's does not exist for NumPy or CuPy arrays); for small or narrow
layers that is a large part of the step. The check is therefore off by
default; :func:`check_saved` (or ``GPUDENSE_CHECK_SAVED=1`` in the
environment, read at the first forward pass unless :func:`check_saved` came
first) switches it on for debugging: each forward pass then keeps a
copy of what it saves, and the backward pass compares the saved arrays with
their copies bit for bit and raises ``RuntimeError`` naming the array.

Example:
    >>> import numpy as np
    >>> from gpudense.layer import Dense
    >>> layer = Dense(3, 2, backend="numpy", rng=0)
    >>> previous = check_saved(True)
    >>> x = np.ones((4, 3), np.float32)
    >>> y = layer(x)
    >>> x[:] = 5.0                      # changed between forward and backward
    >>> layer.backward(np.ones_like(y))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: Dense.backward: its input x was changed in place after the forward pass ...
    >>> _ = check_saved(previous)
"""

from __future__ import annotations

from typing import Any

from gpudense._env import check_saved as _from_environment

__all__ = ["check_saved", "checking_saved"]

_enabled: bool | None = None  # None: not decided yet; GPUDENSE_CHECK_SAVED decides on first use


def check_saved(enabled: bool = True) -> bool:
    """Switch the check of saved arrays on or off for the process; returns the previous setting.

    Args:
        enabled: True to keep a copy of every saved array and compare it at
            the backward pass; False (the default setting) to trust the rule.

    Raises:
        TypeError: ``enabled`` is not a bool.

    Example:
        >>> previous = check_saved(False)
        >>> checking_saved()
        False
        >>> _ = check_saved(previous)
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False; got {enabled!r}")
    previous, _enabled = checking_saved(), enabled
    return previous


def checking_saved() -> bool:
    """Whether saved arrays are checked (see :func:`check_saved`).

    Raises:
        ValueError: ``GPUDENSE_CHECK_SAVED`` is set to a value that is not a boolean.

    Example:
        >>> previous = check_saved(True)
        >>> checking_saved()
        True
        >>> _ = check_saved(previous)
    """
    global _enabled
    if _enabled is None:
        _enabled = _from_environment()
    return _enabled


def snapshot(*arrays: Any) -> tuple[Any, ...] | None:
    """Copies of ``arrays`` (None entries stay None) when the check is on, else None.

    What a block that keeps arrays for its backward pass calls in its forward
    pass; its backward pass hands the result to :func:`verify`.
    """
    if not (_enabled if _enabled is not None else checking_saved()):
        return None
    return tuple(None if a is None else a.copy() for a in arrays)


def verify(where: str, names: tuple[str, ...], arrays: tuple[Any, ...], copies: tuple[Any, ...] | None) -> None:
    """Raise RuntimeError naming the first of ``arrays`` that differs, bit for bit, from its copy.

    Args:
        where: The method that found it, e.g. ``"Dense.backward"``.
        names: A description per array, e.g. ``"its input x"``.
        arrays: The arrays as the backward pass is about to read them.
        copies: What :func:`snapshot` returned at the forward pass (None: nothing to check).
    """
    if copies is None:
        return
    for name, a, c in zip(names, arrays, copies):
        if a is None or c is None:
            continue
        same = a.shape == c.shape and bool((_bits(a) == _bits(c)).all())
        if not same:
            raise RuntimeError(
                f"{where}: {name} was changed in place after the forward pass that saved it, so the "
                "gradients would be computed from the new values; change it only after backward, or pass "
                "a copy to the forward pass"
            )


def _bits(a: Any) -> Any:
    """``a``'s bits as unsigned integers (so that NaN equals NaN and -0.0 differs from 0.0)."""
    kind = {2: "u2", 4: "u4", 8: "u8"}.get(a.dtype.itemsize)
    if kind is None:
        return a
    return (a if a.flags.c_contiguous else a.copy()).view(kind)
