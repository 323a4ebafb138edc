"""Optimizers: SGD (momentum, weight decay), Adam and AdamW, with PyTorch's update rules.

An optimizer takes the model (anything with ``param_grads()``, such as
:class:`~gpudense.nn.MLP` or :class:`~gpudense.layer.Dense`) and on each
:meth:`Optimizer.step` walks its ``param_grads()`` afresh, updating every
parameter **in place** (the arrays the model holds are the arrays that
change) and skipping those whose gradient is None. Per-parameter state
(momentum buffers, Adam's moments) is keyed by the parameter's name and
created on the first step that sees its gradient.

The math is written against the parameters' array module: one temporary the
size of the parameter per step (float16: also a float32 copy of the
gradient), no copies of the parameters. Each parameter
has its own step count, as in PyTorch (a parameter without a gradient on some
steps gets Adam's bias correction for the steps it took). For float16
parameters the optimizer keeps a float32 master copy and float32 state; the
update is applied to the master and the parameter is rewritten from it, so
small updates and weight decay are not lost to float16 rounding (a float16
Adam second moment would also underflow).

Example:
    >>> import numpy as np
    >>> from gpudense.nn import MLP
    >>> model = MLP([3, 4, 2], backend="numpy", rng=0)
    >>> opt = Adam(model, lr=1e-3)
    >>> y = model(np.ones((5, 3), np.float32)); model.backward(np.ones_like(y))
    >>> opt.step(); opt.zero_grad()
"""

from __future__ import annotations

from typing import Any

from gpudense.optim.adam import Adam, AdamW
from gpudense.optim.optimizer import Optimizer, PreparedState
from gpudense.optim.sgd import SGD

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Optimizer", "PreparedState", "make_optimizer"]

#: Name (as ``gpudense train --optimizer``) -> class.
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, model: Any, **kwargs: Any) -> Optimizer:
    """An optimizer by name (``"sgd"``, ``"adam"``, ``"adamw"``) for ``model``.

    Raises:
        ValueError: an unknown name.
    """
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name.lower()](model, **kwargs)
