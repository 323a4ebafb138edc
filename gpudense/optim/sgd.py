"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any

from gpudense._checks import check_number
from gpudense.optim.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and weight decay (PyTorch's ``SGD``).

    ``g = grad + weight_decay * p``; with momentum, ``buf = momentum * buf + g``
    (``buf = g`` on the first step) and ``g = buf`` (Nesterov:
    ``g = g + momentum * buf``); then ``p -= lr * g``.

    Args:
        model: Anything with ``param_grads()``.
        lr: Learning rate, > 0.
        momentum: In [0, 1); 0 (default) keeps no state.
        weight_decay: L2 penalty added to the gradient, >= 0.
        nesterov: Nesterov momentum (needs momentum > 0).
    """

    def __init__(self, model: Any, *, lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False; got {nesterov!r}")
        self.SLOTS = ("momentum",) if check_number("momentum", momentum, high=1.0, high_open=True) else ()
        super().__init__(model, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=float(nesterov))

    def _check_hyperparams(self, hyper: dict[str, Any]) -> dict[str, float]:
        h = {
            "lr": check_number("lr", hyper["lr"], low_open=True),
            "momentum": check_number("momentum", hyper["momentum"], high=1.0, high_open=True),
            "weight_decay": check_number("weight_decay", hyper["weight_decay"]),
            "nesterov": check_number("nesterov", hyper["nesterov"], high=1.0),
        }
        if h["nesterov"] not in (0.0, 1.0):
            raise ValueError(f"nesterov must be 0 or 1; got {hyper['nesterov']!r}")
        if h["nesterov"] and h["momentum"] == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if bool(h["momentum"]) != bool(self.SLOTS):
            raise ValueError(
                f"momentum={h['momentum']} does not fit this SGD, made with momentum "
                f"{'> 0' if self.SLOTS else '= 0'} (make the SGD with the momentum to load)"
            )
        return h

    def _update(self, xp: Any, name: str, p: Any, g: Any, t: int) -> None:
        h = self.hyperparams
        lr, mu, wd = h["lr"], h["momentum"], h["weight_decay"]
        wide = p.dtype  # float32 master for float16 parameters
        own = False  # whether d is a temporary of ours, free to scale in place
        d = g
        if wd:
            d = xp.multiply(p, wd, out=xp.empty(p.shape, dtype=wide))
            d += g
            own = True
        if mu:
            buf = self.state["momentum"].get(name)
            if buf is None:
                buf = self.state["momentum"][name] = d.astype(wide, copy=True)
            else:
                buf *= mu
                buf += d
            if h["nesterov"]:
                nd = buf * mu
                nd += d
                d, own = nd, True
            else:
                d, own = buf, False
        if own:
            d *= lr
            p -= d
        else:
            p -= lr * d
