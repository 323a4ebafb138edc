"""Element-wise activations with their backward: ReLU, GELU (tanh form), Tanh.

Every activation has ``forward(x)`` (also ``__call__``), which keeps what its
backward needs, and ``backward(dy)``, which returns ``dx``. The math is
written once against the array module of its input, so it runs on NumPy and
on CuPy alike.
"""

from __future__ import annotations

import math
from typing import Any

from gpudense._checks import check_float_array
from gpudense.backends import Backend, backend_of, get_backend
from gpudense.layer import ParamGrad

__all__ = ["ACTIVATIONS", "GELU", "ReLU", "Tanh", "get_activation"]


def _check_float(name: str, a: Any) -> Any:
    """The array module of ``a``, after checking ``a`` is a floating NumPy/CuPy array."""
    xp = backend_of(a).xp  # raises TypeError for non-arrays
    check_float_array(name, a)
    return xp


class _Activation:
    """An element-wise activation without parameters."""

    name = ""

    def __init__(self) -> None:
        self._saved: tuple[Any, ...] | None = None

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    __call__ = forward

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        raise NotImplementedError

    def _take_saved(self, dy: Any) -> tuple[Any, ...]:
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        _check_float("dy", dy)
        ref = self._saved[0]
        if dy.shape != ref.shape:
            raise ValueError(
                f"dy must have the forward output's shape {tuple(ref.shape)}; got {tuple(dy.shape)}"
            )
        if dy.dtype != ref.dtype:
            raise TypeError(f"dy must have the forward dtype {ref.dtype}; got {dy.dtype}")
        backend_of(dy, ref)  # raises on a NumPy/CuPy mix
        return self._saved

    def param_grads(self) -> list[ParamGrad]:
        """No parameters: ``[]``."""
        return []

    def zero_grad(self) -> None:
        """No parameters: nothing to do."""

    def to(self, backend: str | Backend) -> "_Activation":
        """Forget the saved forward state (it lived on the old backend); returns ``self``."""
        get_backend(backend)
        self._saved = None
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(_Activation):
    """``y = max(x, 0)``; ``dx = dy`` where ``x > 0``, else 0 (0 at ``x = 0``, as PyTorch).

    Keeps ``y`` for backward (``y > 0`` exactly where ``x > 0``).
    """

    name = "relu"

    def forward(self, x: Any) -> Any:
        xp = _check_float("x", x)
        y = xp.maximum(x, 0)
        self._saved = (y,)
        return y

    __call__ = forward

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        """``dx = dy * (y > 0)``; None when ``input_grad`` is False."""
        (y,) = self._take_saved(dy)
        if not input_grad:
            return None
        return dy * (y > 0)


class Tanh(_Activation):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``. Keeps ``y`` for backward."""

    name = "tanh"

    def forward(self, x: Any) -> Any:
        xp = _check_float("x", x)
        y = xp.tanh(x)
        self._saved = (y,)
        return y

    __call__ = forward

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        """``dx = dy * (1 - y**2)``; None when ``input_grad`` is False."""
        (y,) = self._take_saved(dy)
        if not input_grad:
            return None
        dx = y * y
        dx -= 1
        dx *= dy
        dx *= -1
        return dx


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715
_GELU_CLIP = 10.0  # tanh(sqrt(2/pi) * (10 + 0.044715e3)) == 1.0 exactly in float16/32/64


class GELU(_Activation):
    """GELU, tanh approximation (PyTorch's ``GELU(approximate="tanh")``, as in GPT-2/BERT).

    ``y = x/2 * (1 + tanh(u))`` with ``u = sqrt(2/pi) * (x + 0.044715 x**3)``;
    ``dy/dx = (1 + t)/2 + x/2 * (1 - t**2) * sqrt(2/pi) * (1 + 3*0.044715 x**2)``
    with ``t = tanh(u)``. Keeps ``x`` clipped to [-10, 10] (beyond which t is exactly
    +-1) and ``t`` for backward. (The tanh form
    needs no ``erf``, which NumPy lacks; it differs from the exact
    ``x * Phi(x)`` by less than 5e-4.)
    """

    name = "gelu"

    def forward(self, x: Any) -> Any:
        xp = _check_float("x", x)
        # For |x| >= 10, u >= 43 and t = tanh(u) is exactly +-1 in every float dtype: u is
        # computed on x clipped to [-10, 10], where x^3 cannot overflow (float16 x^2 is inf
        # from |x| = 256, and the backward's inf * (t^2 - 1) would be NaN).
        xc = x.clip(-_GELU_CLIP, _GELU_CLIP)
        t = xc * xc
        t *= _GELU_A
        t += 1
        t *= xc
        t *= _GELU_C
        xp.tanh(t, out=t)
        y = t + 1
        y *= 0.5  # exact; halving before the product keeps x/2*(1+t) finite up to the dtype's max
        y *= x
        self._saved = (y, xc, t)
        return y

    __call__ = forward

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        """``dx = dy * dy/dx`` (formula in the class docstring); None when ``input_grad`` is False."""
        _, xc, t = self._take_saved(dy)
        if not input_grad:
            return None
        # p = x/2 * c * (1 + 3a x^2); dy/dx = (1 + t)/2 - p * (t^2 - 1). On x clipped to
        # [-10, 10] (see forward): beyond it t^2 - 1 == 0 exactly, so p's value there is moot.
        p = xc * xc
        p *= 3 * _GELU_A
        p += 1
        p *= 0.5 * _GELU_C
        p *= xc
        s = t * t
        s -= 1
        p *= s
        dx = t + 1
        dx *= 0.5
        dx -= p
        dx *= dy
        return dx


#: Activation name -> class, for :func:`get_activation` and :class:`MLP`.
ACTIVATIONS: dict[str, type[_Activation]] = {"relu": ReLU, "gelu": GELU, "tanh": Tanh}


def get_activation(name: str) -> _Activation:
    """A new activation by name: ``"relu"``, ``"gelu"`` or ``"tanh"``.

    Raises:
        ValueError: an unknown name.
    """
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name.lower()]()
