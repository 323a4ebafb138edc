"""Adam and AdamW."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpudense._checks import check_number
from gpudense.optim.flatstate import flush_small
from gpudense.optim.optimizer import Optimizer


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
    RULE = "adam"
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

    def _constants(self, dtype: np.dtype) -> dict[str, Any]:
        h = self.hyperparams
        b1, b2, lr, wd = h["beta1"], h["beta2"], h["lr"], h["weight_decay"]
        f = dtype.type
        return {
            "b1": f(b1), "omb1": f(1 - b1), "b2": f(b2), "omb2": f(1 - b2),
            "l2": int(bool(wd) and not self.decoupled), "wd": f(wd),
            "decoupled": int(bool(wd) and self.decoupled), "decay": f(1 - lr * wd), "eps": f(h["eps"]),
        }

    def _per_step(self, t: int, dtype: np.dtype) -> dict[str, Any]:
        h = self.hyperparams
        f = dtype.type
        # denom = sqrt(v) / sqrt(1 - b2**t) + eps; step = lr / (1 - b1**t) * m / denom
        return {"c2": f(1 / math.sqrt(1 - h["beta2"]**t)), "k": f(h["lr"] / (1 - h["beta1"]**t))}

    def _chunk(self, xp: Any, s: dict[str, Any], w: Any, g: Any, state: list[Any],
               ta: Any, tb: Any, mask: Any) -> None:
        m, v = state
        if s["decoupled"]:
            w *= s["decay"]  # AdamW: decay the weights, not the gradient
        if s["l2"]:
            xp.multiply(w, s["wd"], out=tb)  # Adam's L2 term
            tb += g
            g = tb
        xp.multiply(g, s["omb1"], out=ta)
        m *= s["b1"]
        m += ta
        if s["tiny"]:
            flush_small(xp, m, s["tiny"], ta, mask)
        xp.multiply(g, g, out=ta)
        ta *= s["omb2"]
        v *= s["b2"]
        v += ta
        xp.sqrt(v, out=ta)
        ta *= s["c2"]
        ta += s["eps"]
        xp.divide(m, ta, out=ta)
        ta *= s["k"]
        w -= ta
        if s["flush_all"]:
            flush_small(xp, v, s["tiny"], ta, mask, signed=False)
            flush_small(xp, w, s["tiny"], ta, mask)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter), PyTorch's ``AdamW``: Adam with decoupled weight decay.

    Each step first shrinks ``p *= 1 - lr * weight_decay``, then takes Adam's
    step on the plain gradient. Default ``weight_decay=0.01`` as PyTorch.
    """

    decoupled = True

    def __init__(self, model: Any, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
