"""Adam and AdamW."""

from __future__ import annotations

import math
from typing import Any

from gpudense._checks import check_number
from gpudense.optim.optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's ``Adam``; ``weight_decay`` is the L2 form added to the gradient.

    With ``g = grad + weight_decay * p`` and step ``t``:
    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g**2``,
    ``p -= lr * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + eps)``.

    Args:
        model: Anything with ``param_grads()``.
        lr: Learning rate, > 0.
        betas: ``(b1, b2)``, each in [0, 1).
        eps: Added to the denominator, > 0.
        weight_decay: L2 penalty, >= 0.
    """

    SLOTS = ("m", "v")
    NON_NEGATIVE_SLOTS = ("v",)
    decoupled = False

    def __init__(self, model: Any, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (b1, b2); got {betas!r}")
        super().__init__(model, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)

    def _check_hyperparams(self, hyper: dict[str, Any]) -> dict[str, float]:
        return {
            "lr": check_number("lr", hyper["lr"], low_open=True),
            "beta1": check_number("betas[0]", hyper["beta1"], high=1.0, high_open=True),
            "beta2": check_number("betas[1]", hyper["beta2"], high=1.0, high_open=True),
            "eps": check_number("eps", hyper["eps"], low_open=True),
            "weight_decay": check_number("weight_decay", hyper["weight_decay"]),
        }

    def _update(self, xp: Any, name: str, p: Any, g: Any, t: int) -> None:
        h = self.hyperparams
        b1, b2, lr, wd = h["beta1"], h["beta2"], h["lr"], h["weight_decay"]
        m = self._slot(xp, "m", name, p)
        v = self._slot(xp, "v", name, p)
        if self.decoupled and wd:
            p *= 1 - lr * wd  # AdamW: decay the weights, not the gradient
        tmp = xp.empty(p.shape, dtype=m.dtype)  # the one temporary

        def grad_into_tmp() -> None:
            if wd and not self.decoupled:
                xp.multiply(p, wd, out=tmp)  # Adam's L2 term
                xp.add(tmp, g, out=tmp)
            else:
                tmp[...] = g

        grad_into_tmp()
        tmp *= 1 - b1
        m *= b1
        m += tmp
        grad_into_tmp()
        tmp *= tmp
        tmp *= 1 - b2
        v *= b2
        v += tmp
        bc1 = 1 - b1**t
        bc2 = 1 - b2**t
        # denom = sqrt(v / bc2) + eps; step = (lr / bc1) * m / denom
        xp.sqrt(v, out=tmp)
        tmp *= 1 / math.sqrt(bc2)
        tmp += h["eps"]
        xp.divide(m, tmp, out=tmp)
        tmp *= lr / bc1
        p -= tmp


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter), PyTorch's ``AdamW``: Adam with decoupled weight decay.

    Each step first shrinks ``p *= 1 - lr * weight_decay``, then takes Adam's
    step on the plain gradient. Default ``weight_decay=0.01`` as PyTorch.
    """

    decoupled = True

    def __init__(self, model: Any, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
