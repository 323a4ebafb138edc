"""Optimizers: SGD (momentum, weight decay), Adam and AdamW, with PyTorch's update rules.

An optimizer takes the model (anything with ``param_grads()``, such as
:class:`~gpudense.nn.MLP` or :class:`~gpudense.layer.Dense`) and on each
:meth:`Optimizer.step` walks its ``param_grads()`` afresh, updating every
parameter **in place** (the arrays the model holds are the arrays that
change) and skipping those whose gradient is None. Per-parameter state
(momentum buffers, Adam's moments) is keyed by the parameter's name and
starts on the first step that sees its gradient.

The state of all parameters of one dtype lies in one flat buffer per slot
(:mod:`gpudense.optim.flatstate`); ``optimizer.state[slot][name]`` are views
of it. On a GPU a step is one elementwise kernel per buffer; on a CPU it runs
through the buffers in cache-sized chunks of in-place NumPy operations, with
a few chunk-sized temporaries and no copies of the parameters. State entries
that fall below the smallest normal number are set to zero (subnormal
arithmetic is slow on many CPUs). Each parameter has its own step count, as
in PyTorch (a parameter without a gradient on some steps gets Adam's bias
correction for the steps it took). For 16-bit parameters the optimizer keeps
a float32 master copy and float32 state; the update is applied to the master
and the parameter is rewritten from it, so small updates and weight decay are
not lost to float16 rounding (a float16 Adam second moment would also
underflow).

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
