"""The element-wise activations and their derivatives, written once against an array module.

As functions of the pre-activation ``z`` (``z = x @ w + b`` in a dense layer):

    relu:  y = max(z, 0)              dy/dz = 1 where y > 0, else 0 (0 at z = 0, as PyTorch)
    tanh:  y = tanh(z)                dy/dz = 1 - y**2
    gelu:  y = z/2 * (1 + t)          dy/dz = (1 + t)/2 + z/2 * (1 - t**2) * c * (1 + 3 a z**2)
           t = tanh(c * (z + a z**3)),  c = sqrt(2/pi),  a = 0.044715

GELU is the tanh form, PyTorch's ``gelu(approximate="tanh")``. Its ``t`` is
computed on ``z`` clipped to [-10, 10]: beyond that ``t`` is exactly +-1 in
every float type, and ``z**3`` cannot overflow (float16's ``z**2`` is inf from
``|z| = 256``, and ``inf * (t**2 - 1)`` would be NaN), so GELU and its
derivative are finite for every finite input.

What a backward pass needs of the forward (``saved``): ``y`` for relu and
tanh (the output itself, so nothing extra is kept) and ``z`` for gelu, whose
derivative is not a function of ``y``.

Precision: float16 and bfloat16 are computed in float32 and rounded once at
the end; float32 and float64 in their own type. The operations are written
out one at a time, in place where NumPy allows, in a fixed order; the CUDA
kernels (``kernels/activations.cuh``, given :data:`GELU_C`, :data:`GELU_A` and
:data:`GELU_CLIP` as ``-D`` options) perform the same roundings in the same
order, so on float32 they give the same bits wherever ``tanh`` does.

These functions are the one source of the activation math: the
:mod:`~gpudense.activations` blocks, the fused dense layer
(:func:`~gpudense.functional.dense_act_forward`,
:func:`~gpudense.functional.dense_act_backward` on NumPy) and the tests'
model of the CUDA kernels all call them.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from gpudense._checks import wide_dtype

#: The activations, by name.
ACTIVATION_NAMES = ("relu", "gelu", "tanh")
#: GELU's ``sqrt(2/pi)``.
GELU_C = math.sqrt(2.0 / math.pi)
#: GELU's cubic coefficient.
GELU_A = 0.044715
#: GELU's ``t`` is computed on ``z`` clipped to ``[-GELU_CLIP, GELU_CLIP]``:
#: tanh(sqrt(2/pi) * (10 + 0.044715e3)) == 1.0 exactly in float16/32/64.
GELU_CLIP = 10.0

Tanh = Callable[[Any], Any]


def check_activation(name: Any, *, allow_none: bool = False) -> str | None:
    """``name`` as an activation name (lower case), or None where allowed.

    Raises:
        ValueError: not one of :data:`ACTIVATION_NAMES` (nor None where allowed).

    Example:
        >>> check_activation("ReLU"), check_activation(None, allow_none=True)
        ('relu', None)
    """
    if name is None and allow_none:
        return None
    if isinstance(name, str) and name.strip().lower() in ACTIVATION_NAMES:
        return name.strip().lower()
    expected = ", ".join(repr(n) for n in ACTIVATION_NAMES) + (" or None" if allow_none else "")
    raise ValueError(f"unknown activation {name!r}; expected one of {expected}")


def _work(a: Any) -> Any:
    """``a`` in the type it is computed in: a float32 copy of 16-bit arrays, else ``a`` itself."""
    wide = wide_dtype(a.dtype)
    return a if wide == a.dtype else a.astype(wide)


def _gelu_t(xp: Any, zc: Any, tanh: Tanh | None) -> Any:
    """``t = tanh(c * (zc + a zc**3))`` as a new array, for ``zc`` already clipped."""
    t = zc * zc
    t *= GELU_A
    t += 1
    t *= zc
    t *= GELU_C
    if tanh is None:
        xp.tanh(t, out=t)
    else:
        t[...] = tanh(t)
    return t


def activation_forward(xp: Any, name: str, z: Any, b: Any = None, *, overwrite: bool = False,
                       tanh: Tanh | None = None) -> tuple[Any, Any]:
    """``y = act(z + b)`` and what the backward pass needs.

    Args:
        xp: The array module of ``z`` (``numpy`` or ``cupy``).
        name: ``"relu"``, ``"gelu"`` or ``"tanh"``.
        z: The pre-activation without bias, any shape; float16, bfloat16,
            float32 or float64.
        b: Optional bias, broadcast against ``z`` (shape ``(z.shape[-1],)``).
        overwrite: Whether ``z``'s memory may hold the result (a fresh
            product, as in a dense layer); otherwise ``z`` is left as it is.
        tanh: The tanh to use (default ``xp.tanh``); the tests pass a
            compiled kernel's own, to reproduce its bits.

    Returns:
        ``(y, saved)``: ``y`` of ``z``'s shape and dtype; ``saved`` is ``y``
        itself for relu and tanh and ``z + b`` (rounded to ``z``'s dtype)
        for gelu (see :func:`activation_grad`).

    Example:
        >>> import numpy as np
        >>> y, saved = activation_forward(np, "relu", np.array([-1.0, 2.0]), np.array([0.5, 0.5]))
        >>> y.tolist(), saved is y
        ([0.0, 2.5], True)
    """
    dtype = z.dtype
    wide = wide_dtype(dtype)
    if wide != dtype:  # 16-bit: z + b and the activation in float32, rounded once
        v = z.astype(wide)
        if b is not None:
            v += b.astype(wide)
    elif b is not None:
        v = xp.add(z, b, out=z if overwrite else None)
    else:
        v = z
    owned = v is not z or overwrite  # whether v's memory may take the result
    if name == "relu":
        y = xp.maximum(v, 0, out=v if owned else None)  # NaN stays NaN; -0.0 becomes +0.0
    elif name == "tanh":
        if not owned:
            v = v.copy()
        if tanh is None:
            xp.tanh(v, out=v)
        else:
            v[...] = tanh(v)
        y = v
    else:
        if name != "gelu":
            check_activation(name)
        zc = v.clip(-GELU_CLIP, GELU_CLIP)
        y = _gelu_t(xp, zc, tanh)
        y += 1
        y *= 0.5  # exact; halving before the product keeps z/2*(1+t) finite up to the dtype's max
        y *= v
        if v.dtype == dtype:
            return y, v
        saved = z if overwrite else xp.empty(z.shape, dtype)
        saved[...] = v  # z + b rounded once, as the backward pass reads it
        return y.astype(dtype), saved
    if y.dtype != dtype:
        y = y.astype(dtype)
    return y, y


def activation_grad(xp: Any, name: str, saved: Any, dy: Any, *, tanh: Tanh | None = None) -> Any:
    """``dz = dy * act'(z)``: the gradient with respect to the pre-activation.

    Args:
        xp: The array module of the arrays.
        name: ``"relu"``, ``"gelu"`` or ``"tanh"``.
        saved: What :func:`activation_forward` returned as ``saved``: ``y``
            (relu, tanh) or ``z`` (gelu).
        dy: dL/dy, ``saved``'s shape and dtype.
        tanh: As for :func:`activation_forward` (gelu recomputes ``t``).

    Returns:
        ``dz``, a new array of ``dy``'s shape and dtype. For relu ``dz`` is
        ``dy * (y > 0)`` (so a NaN or inf in ``dy`` where ``y <= 0`` gives
        NaN, and a negative ``dy`` there gives -0.0).

    Example:
        >>> import numpy as np
        >>> activation_grad(np, "tanh", np.array([0.0, 0.5]), np.array([1.0, 1.0])).tolist()
        [1.0, 0.75]
    """
    dtype = dy.dtype
    if name == "relu":
        dz = xp.multiply(dy, xp.greater(saved, 0))  # exact in every type: no float32 detour
    elif name == "tanh":
        y = _work(saved)
        dz = y * y
        dz -= 1
        dz *= dy
        dz *= -1
    else:
        if name != "gelu":
            check_activation(name)
        # p = z/2 * c * (1 + 3a z^2); dy/dz = (1 + t)/2 - p * (t^2 - 1). On z clipped to
        # [-10, 10]: beyond it t^2 - 1 == 0 exactly, so p's value there is moot.
        zc = _work(saved).clip(-GELU_CLIP, GELU_CLIP)
        t = _gelu_t(xp, zc, tanh)
        p = zc * zc
        p *= 3 * GELU_A
        p += 1
        p *= 0.5 * GELU_C
        p *= zc
        s = t * t
        s -= 1
        p *= s
        dz = t
        dz += 1
        dz *= 0.5
        dz -= p
        dz *= dy
    return dz if dz.dtype == dtype else dz.astype(dtype)
