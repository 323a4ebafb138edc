"""Small trained models for the tests: ``trained()``, an MLP and its Adam after a few steps."""

from __future__ import annotations

import numpy as np

from gpudense.losses import softmax_cross_entropy
from gpudense.nn import MLP
from gpudense.optim import Adam


def trained(seed=0, sizes=(4, 6, 3), dtype="float32", steps=3):
    """A small MLP and Adam after a few steps, so every optimizer slot exists."""
    model = MLP(list(sizes), dtype=dtype, backend="numpy", rng=seed)
    opt = Adam(model, lr=0.01)
    gen = np.random.default_rng(seed)
    for _ in range(steps):
        x = gen.standard_normal((5, sizes[0])).astype(dtype)
        loss, g = softmax_cross_entropy(model(x), gen.integers(0, sizes[-1], 5))
        model.backward(g)
        opt.step()
        opt.zero_grad()
    return model, opt
