"""Small models for the tests: ``trained()`` (an MLP and its Adam after a few steps), ``Params`` (named
arrays an optimizer can step), and ``rewrite`` (a checkpoint file copied with its arrays changed)."""

from __future__ import annotations

import numpy as np

from gpudense.layer import ParamGrad
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


class Params:
    """Named arrays with gradients, the least a model must be for an optimizer."""

    def __init__(self, **arrays):
        self.params, self.grads = arrays, {k: None for k in arrays}

    def param_grads(self):
        return [ParamGrad(k, p, self.grads[k]) for k, p in self.params.items()]

    def zero_grad(self):
        self.grads = {k: None for k in self.params}


def rewrite(src, dst, change):
    """Copy the .npz at src to dst with ``change(dict)`` applied to its arrays."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst
