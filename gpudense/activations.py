"""Element-wise activations as blocks with their backward: ReLU, GELU (tanh form), Tanh.

Every activation has ``forward(x)`` (also ``__call__``), which keeps what its
backward needs, and ``backward(dy)``, which returns ``dx``. The formulas are
those of :mod:`gpudense.activation_math` (shared with the fused
``Dense(..., activation=...)``), written once against the array module of
the input, so they run on NumPy and on CuPy alike.
"""

from __future__ import annotations

from typing import Any

from gpudense._checks import check_float_array
from gpudense.activation_math import activation_forward, activation_grad, check_activation
from gpudense.backends import Backend, backend_of, get_backend
from gpudense.layer import ParamGrad
from gpudense.saved import snapshot, verify

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
        self._copies: tuple[Any, ...] | None = None  # while gpudense.saved checks saved arrays

    def forward(self, x: Any) -> Any:
        """``y = act(x)``; keeps what backward needs (``y``, or ``x`` for GELU), without copying it.

        Change the kept array in place only after :meth:`backward` (see
        :mod:`gpudense.saved`).
        """
        xp = _check_float("x", x)
        y, saved = activation_forward(xp, self.name, x)
        self._saved = (y, saved)
        self._copies = snapshot(saved)
        return y

    __call__ = forward

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        """``dx = dy * act'(x)``; None when ``input_grad`` is False."""
        _, saved = self._take_saved(dy)
        if self._copies is not None:
            what = "its input x" if saved is not self._saved[0] else "its output y"
            verify(f"{type(self).__name__}.backward", (what,), (saved,), self._copies)
        if not input_grad:
            return None
        return activation_grad(backend_of(dy).xp, self.name, saved, dy)

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
        self._saved = self._copies = None
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(_Activation):
    """``y = max(x, 0)``; ``dx = dy`` where ``x > 0``, else 0 (0 at ``x = 0``, as PyTorch).

    Keeps ``y`` for backward (``y > 0`` exactly where ``x > 0``).
    """

    name = "relu"


class Tanh(_Activation):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``. Keeps ``y`` for backward."""

    name = "tanh"


class GELU(_Activation):
    """GELU, tanh approximation (PyTorch's ``GELU(approximate="tanh")``, as in GPT-2/BERT).

    ``y = x/2 * (1 + tanh(u))`` with ``u = sqrt(2/pi) * (x + 0.044715 x**3)``;
    ``dy/dx = (1 + t)/2 + x/2 * (1 - t**2) * sqrt(2/pi) * (1 + 3*0.044715 x**2)``
    with ``t = tanh(u)``, computed on ``x`` clipped to [-10, 10] (beyond which
    t is exactly +-1), so both are finite for every finite ``x``. Keeps ``x``
    for backward, which recomputes ``t``. (The tanh form needs no ``erf``,
    which NumPy lacks; it differs from the exact ``x * Phi(x)`` by less than 5e-4.)
    """

    name = "gelu"


#: Activation name -> class, for :func:`get_activation` and :class:`MLP`.
ACTIVATIONS: dict[str, type[_Activation]] = {"relu": ReLU, "gelu": GELU, "tanh": Tanh}


def get_activation(name: str) -> _Activation:
    """A new activation by name: ``"relu"``, ``"gelu"`` or ``"tanh"``.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> get_activation("GELU")
        GELU()
    """
    return ACTIVATIONS[check_activation(name)]()
