"""The argument rules of gpudense, each written once.

Every public function and class checks its arguments through these helpers,
so a rule (which dtypes are supported, what a size or a seed may be, which
arrays belong together, which dtype a reduction widens to) is stated in one
place and every message reads alike: what was expected, then what came.

Nothing here imports CuPy: a CuPy array is recognised by its type's module.
Nothing here imports ml_dtypes either until bfloat16 is asked for by name: an
array's bfloat16 dtype is recognised by its name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Floating dtypes gpudense computes in that NumPy itself provides; bfloat16
#: (from ml_dtypes, imported only when asked for) is the fourth.
FLOAT_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
#: Their names, as a message lists them.
FLOAT_NAMES = "float16, bfloat16, float32 or float64"
#: The extra that installs ml_dtypes, the package behind bfloat16.
BF16_EXTRA = "bf16"
_BF16 = "bfloat16"


# -- dtypes ----------------------------------------------------------------


def bfloat16_dtype() -> np.dtype:
    """The bfloat16 dtype (``ml_dtypes.bfloat16``), importing ml_dtypes on first use.

    Raises:
        RuntimeError: ml_dtypes is not installed; the message names the extra.

    Example:
        >>> bfloat16_dtype().name
        'bfloat16'
    """
    try:
        import ml_dtypes
    except ImportError as exc:
        raise RuntimeError(
            f"bfloat16 needs the ml_dtypes package ({exc}); install it with "
            f"pip install 'gpudense[{BF16_EXTRA}]'"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def is_float_dtype(dtype: Any) -> bool:
    """Whether the ``numpy.dtype`` ``dtype`` is float16, bfloat16, float32 or float64 (no import)."""
    return dtype in FLOAT_DTYPES or (getattr(dtype, "kind", None) == "V" and dtype.name == _BF16)


def float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """``dtype`` (a name, type or ``numpy.dtype``) as a supported ``numpy.dtype``.

    ``"bfloat16"`` imports ml_dtypes (see :func:`bfloat16_dtype`).

    Raises:
        TypeError: not a dtype, or not float16, bfloat16, float32 or float64.
        RuntimeError: bfloat16 without ml_dtypes installed.

    Example:
        >>> float_dtype("float32")
        dtype('float32')
    """
    if isinstance(dtype, str) and dtype.strip().lower() == _BF16:
        return bfloat16_dtype()
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be {FLOAT_NAMES}; got {dtype!r}") from exc
    if not is_float_dtype(dt):
        raise TypeError(f"{name} must be {FLOAT_NAMES}; got {dt}")
    return dt


def check_float_array(name: str, a: Any) -> None:
    """Raise TypeError unless the array ``a`` has a supported floating dtype in native byte order.

    A big-endian array (``>f4`` on a little-endian machine) is refused by
    name rather than converted: converting it would copy it at every call,
    silently. Convert it once, ``a.astype(np.float32)``.

    Example:
        >>> check_float_array("x", np.ones(2, ">f4"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: x has non-native byte order (dtype >f4, big-endian); ... x.astype(np.float32)
    """
    dt = np.dtype(a.dtype)
    if not is_float_dtype(dt) and dt.newbyteorder("=") in FLOAT_DTYPES:
        order = "big-endian" if dt.byteorder == ">" else "little-endian"
        raise TypeError(
            f"{name} has non-native byte order (dtype {dt.str}, {order}); gpudense computes in this "
            f"machine's byte order: convert it once with {name}.astype(np.{dt.newbyteorder('=').name})"
        )
    if not is_float_dtype(dt):
        raise TypeError(f"{name} must be a floating array ({FLOAT_NAMES}); got dtype {a.dtype}")


def wide_dtype(dtype: Any) -> np.dtype:
    """The dtype that sums, products, losses and optimizer state of ``dtype`` are kept in.

    float16 and bfloat16 widen to float32 (their range or precision is too
    small to add many terms, or to hold Adam's second moment); float32 and
    float64 stay.

    Example:
        >>> wide_dtype(np.float16), wide_dtype(np.float64)
        (dtype('float32'), dtype('float64'))
    """
    dt = np.dtype(dtype)
    wide = _WIDE.get(dt)
    if wide is not None:
        return wide
    return _FLOAT32 if dt.kind == "V" and dt.name == _BF16 else dt


_FLOAT32 = np.dtype(np.float32)
_WIDE = {np.dtype(np.float16): _FLOAT32, _FLOAT32: _FLOAT32, np.dtype(np.float64): np.dtype(np.float64)}


# -- numbers ----------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_count(value: Any) -> bool:
    """Whether ``value`` is an int (not a bool) >= 0."""
    return _is_int(value) and value >= 0


def int_at_least(name: str, value: Any, low: int) -> int:
    """``value`` as an int, if it is an int (not a bool) >= ``low``; else ValueError."""
    if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int, if it is an int (not a bool) >= 1; else ValueError."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; else TypeError (1, "no" and None are not bools)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float, if it is a finite real number in the interval; else a clear error.

    Raises:
        TypeError: not a real number (bools are not numbers here).
        ValueError: outside ``[low, high]`` (``(`` / ``)`` where open), or not finite.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {value!r}")
    v = float(value)
    ok_low = v > low if low_open else v >= low
    ok_high = v < high if high_open else v <= high
    if not (math.isfinite(v) and ok_low and ok_high):
        lo = "(" if low_open or low == -math.inf else "["  # an infinite bound is never in the interval
        hi = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}; got {value!r}")
    return v


# -- random generators ---------------------------------------------------------


def as_generator(rng: Any, name: str = "rng") -> np.random.Generator:
    """``rng`` as a ``numpy.random.Generator``: a Generator, an int seed >= 0, or None (fresh entropy).

    Raises:
        TypeError: any other type.
        ValueError: a negative seed.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if _is_int(rng):
        if rng < 0:
            raise ValueError(f"{name} must be a seed >= 0 (or a numpy.random.Generator); got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be a numpy.random.Generator, an int seed or None; got {type(rng).__name__}")


# -- arrays -------------------------------------------------------------------


def array_kind(a: Any) -> str:
    """``"numpy"`` or ``"cupy"``: whose array ``a`` is (CuPy is recognised without importing it).

    Raises:
        TypeError: ``a`` is neither a ``numpy.ndarray`` nor a ``cupy.ndarray``, or is a
            ``numpy.ma.MaskedArray`` (gpudense's math would ignore its mask).
    """
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            "got a numpy.ma.MaskedArray; gpudense ignores masks, so it takes plain arrays only: "
            "pass a.filled(value) with the value the masked entries should have"
        )
    if isinstance(a, np.ndarray):
        return "numpy"
    module = type(a).__module__ or ""
    if module == "cupy" or module.startswith("cupy."):
        return "cupy"
    raise TypeError(f"expected a numpy.ndarray or cupy.ndarray, got {type(a).__module__}.{type(a).__name__}")


def describe_array(a: Any) -> str:
    """``"numpy.ndarray of shape (2, 3) and dtype float32"``, for messages."""
    return f"{type(a).__module__}.{type(a).__name__} of shape {tuple(a.shape)} and dtype {a.dtype}"


def check_finite(what: str, a: Any, xp: Any = np) -> None:
    """Raise ValueError unless every value of the array ``a`` is finite (no NaN, no inf).

    Args:
        what: The array's name in the message, e.g. ``"param/0.w"``.
        a: A NumPy array, or an array of the module ``xp``.
        xp: The array module of ``a`` (``backend.xp``); NumPy by default.

    Example:
        >>> check_finite("w", np.array([1.0, np.nan]))
        Traceback (most recent call last):
        ...
        ValueError: w holds 1 of 2 values that are not finite (NaN or inf)
    """
    bad = int(a.size) - int(xp.count_nonzero(xp.isfinite(a)))
    if bad:
        raise ValueError(f"{what} holds {bad} of {a.size} values that are not finite (NaN or inf)")


def memory_owner(a: Any) -> Any:
    """The array that owns the memory ``a`` views (``a`` itself, or its base); None where another kind of object
    holds it (a DLPack producer, a buffer), so that only a memory test tells whether two such arrays overlap.

    Example:
        >>> buf = np.zeros(8); memory_owner(buf[2:].reshape(2, 3)) is buf, memory_owner(np.frombuffer(b"12345678"))
        (True, None)
    """
    base = a.base
    while base is not None:
        if type(base) is not type(a):
            return None
        a, base = base, base.base
    return a


def check_no_overlap(xp: Any, outs: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Refuse an output array that shares memory with an input or with another output array.

    A function that writes one output before it reads its inputs for the
    next (``dx`` before ``dw = x.T @ dy``) would give a silently wrong result
    where they overlap. Memory bounds are compared first (cheap); only where
    they overlap is the exact test run, so strided views that interleave
    without touching pass.

    Args:
        xp: The array module of the arrays (``numpy`` or ``cupy``, as
            ``backend.xp``; both have ``may_share_memory`` and ``shares_memory``).
        outs: ``{name: array or None}`` of the outputs, e.g. ``{"out.dx": ...}``.
        inputs: ``{name: array or None}`` of the inputs.

    Raises:
        ValueError: one line naming the two arrays.

    Example:
        >>> x = np.ones((2, 3)); check_no_overlap(np, {"out.dx": np.empty((2, 3))}, {"x": x})
        >>> check_no_overlap(np, {"out.dx": x}, {"x": x})
        Traceback (most recent call last):
        ...
        ValueError: out.dx shares memory with x; each out array must be memory of its own, apart from the inputs and the other out arrays
    """
    given_outs = [(name, a) for name, a in outs.items() if a is not None]
    candidates = given_outs + [(name, a) for name, a in inputs.items() if a is not None]
    for i, (name, a) in enumerate(given_outs):
        for other, b in candidates[i + 1:]:
            if xp.may_share_memory(a, b) and xp.shares_memory(a, b):
                raise ValueError(f"{name} shares memory with {other}; each out array must be memory of its "
                                 "own, apart from the inputs and the other out arrays")


def check_optimizer_of(optimizer: Any, model: Any, name: str = "optimizer") -> None:
    """Refuse an optimizer built for another model: stepping it would change that model, not this one.

    An optimizer with a ``model`` attribute (every
    :class:`~gpudense.optim.Optimizer`) fits ``model`` when it is that model,
    or when both list the same parameter arrays under the same names (a
    wrapper around the same layers). An object without ``model`` is not checked.

    Raises:
        ValueError: one line naming ``name`` and saying what to do.

    Example:
        >>> from gpudense.nn import MLP
        >>> from gpudense.optim import SGD
        >>> a, b = MLP([2, 2], backend="numpy", rng=0), MLP([2, 2], backend="numpy", rng=0)
        >>> check_optimizer_of(SGD(a), a)
        >>> check_optimizer_of(SGD(a), b)
        Traceback (most recent call last):
        ...
        ValueError: optimizer was built for another model: the parameters it steps are not this model's; build it from this model, e.g. SGD(model)
    """
    owner = getattr(optimizer, "model", None)
    if owner is None or owner is model:
        return
    mine = {pg.name: pg.param for pg in model.param_grads()}
    theirs = {pg.name: pg.param for pg in owner.param_grads()}
    if mine.keys() == theirs.keys() and all(theirs[key] is a for key, a in mine.items()):
        return
    raise ValueError(f"{name} was built for another model: the parameters it steps are not this model's; "
                     f"build it from this model, e.g. {type(optimizer).__name__}(model)")


def check_layer(x: Any, w: Any, b: Any) -> None:
    """The rules of a dense layer's arguments: floating arrays, ``w`` 2-D, ``x`` of ``(..., n_in)``, ``b`` of
    ``(n_out,)``, one dtype; each broken rule a TypeError or ValueError naming the argument."""
    check_float_array("x", x)
    check_float_array("w", w)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (n_in, n_out); got {describe_array(w)}")
    if x.ndim < 1:
        raise ValueError(f"x must have at least 1 dimension (..., n_in); got {describe_array(x)}")
    if x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"x's last dimension must equal w's in_features {w.shape[0]}; got x of shape "
            f"{tuple(x.shape)} and w of shape {tuple(w.shape)}"
        )
    if x.dtype != w.dtype:
        raise TypeError(
            f"x and w must have the same dtype (no silent cast); got x {x.dtype} and w {w.dtype}"
        )
    if b is not None:
        check_float_array("b", b)
        if b.shape != (w.shape[1],):
            raise ValueError(
                f"b must have shape ({w.shape[1]},) to match w's out_features; got shape {tuple(b.shape)}"
            )
        if b.dtype != w.dtype:
            raise TypeError(f"b must have w's dtype {w.dtype}; got {b.dtype}")
