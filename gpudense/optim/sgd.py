"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudense._checks import check_number
from gpudense.optim.flatstate import flush_small
from gpudense.optim.optimizer import Optimizer


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

    RULE = "sgd"

    def __init__(self, model: Any, *, lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False; got {nesterov!r}")
        self.SLOTS = ("momentum",) if check_number("momentum", momentum, high=1.0, high_open=True) else ()
        super().__init__(model, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=float(nesterov))

    def __repr__(self) -> str:
        shown = dict(self.hyperparams, nesterov=bool(self.hyperparams["nesterov"]))  # stored as 0.0/1.0
        return f"SGD({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

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

    def _constants(self, dtype: np.dtype) -> dict[str, Any]:
        h = self.hyperparams
        f = dtype.type
        return {
            "lr": f(h["lr"]), "mu": f(h["momentum"]), "wd": f(h["weight_decay"]),
            "l2": int(bool(h["weight_decay"])), "nesterov": int(bool(h["nesterov"])),
        }

    def _per_step(self, t: int, dtype: np.dtype) -> dict[str, Any]:
        return {"first": int(t == 1)}

    def _chunk(self, xp: Any, s: dict[str, Any], w: Any, g: Any, state: list[Any],
               ta: Any, tb: Any, mask: Any) -> None:
        d = g
        if s["l2"]:
            xp.multiply(w, s["wd"], out=ta)
            ta += g
            d = ta
        if state:  # momentum
            (buf,) = state
            if s["first"]:
                buf[...] = d
            else:
                buf *= s["mu"]
                buf += d
            if s["tiny"]:
                flush_small(xp, buf, s["tiny"], tb, mask)
            if s["nesterov"]:
                xp.multiply(buf, s["mu"], out=tb)
                tb += d
                d = tb
            else:
                d = buf
        xp.multiply(d, s["lr"], out=ta)
        w -= ta
        if s["flush_all"]:
            flush_small(xp, w, s["tiny"], ta, mask)
