"""Optimizer steps on the GPU (one ElementwiseKernel per flat buffer) give the CPU path's bits.

Both paths round every operation on its own in the same order and keep
subnormal numbers until the same explicit flush
(gpudense.backends.cuda.optim_kernels), so the comparison is exact. Marked
``gpu``: conftest.py skips it, with the reason, where CuPy or a CUDA device is
missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudense.backends import get_backend
from gpudense.optim import SGD, Adam, AdamW
from gpudense.optim.flatstate import FLUSH_PERIOD

from small_models import Params

pytestmark = pytest.mark.gpu


FACTORIES = {
    "adam": lambda m: Adam(m, lr=1e-2, betas=(0.5, 0.9)),
    "adam-l2": lambda m: Adam(m, lr=1e-2, weight_decay=0.1),
    "adamw": lambda m: AdamW(m, lr=1e-2, weight_decay=0.1),
    "sgd": lambda m: SGD(m, lr=0.1, weight_decay=0.01),
    "sgd-momentum": lambda m: SGD(m, lr=0.05, momentum=0.5),
    "sgd-nesterov": lambda m: SGD(m, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_gpu_steps_equal_cpu_steps_bit_for_bit(name, dtype):
    cupy_backend = get_backend("cupy")
    cp = cupy_backend.xp
    rng = np.random.default_rng(0)
    shapes = {"a": (37, 5), "b": (5,), "c": (3000,)}
    p0 = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    tiny = np.finfo(np.float32 if dtype == np.float16 else dtype).tiny
    cpu, gpu = Params(**{k: v.copy() for k, v in p0.items()}), Params(**{k: cp.asarray(v) for k, v in p0.items()})
    opt_c, opt_g = FACTORIES[name](cpu), FACTORIES[name](gpu)
    for step in range(FLUSH_PERIOD + 2):
        grads = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
        grads["c"][:100] = 0.0  # dead units
        if dtype != np.float16:
            grads["c"][100:110] = tiny * (step + 1)
        cpu.grads = {k: g.copy() for k, g in grads.items()}
        gpu.grads = {k: cp.asarray(g) for k, g in grads.items()}
        opt_c.step()
        opt_g.step()
        for k in shapes:
            np.testing.assert_array_equal(cp.asnumpy(gpu.params[k]), cpu.params[k], err_msg=f"{k} at step {step}")
    for slot, named in opt_c.state.items():
        for k, a in named.items():
            np.testing.assert_array_equal(cp.asnumpy(opt_g.state[slot][k]), a, err_msg=f"{slot}/{k}")
    assert cupy_backend._optimizer_kernels._built, "the fused kernel did not run"


def test_an_mlp_on_the_gpu_steps_through_its_flat_buffers():
    from gpudense.losses import softmax_cross_entropy
    from gpudense.nn import MLP

    cupy_backend = get_backend("cupy")
    cp = cupy_backend.xp
    model = MLP([6, 9, 3], backend="cupy", rng=0)
    assert model.flat is not None and isinstance(model.flat.params, cp.ndarray)
    opt = Adam(model, lr=1e-2)
    x = cp.asarray(np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32))
    labels = cp.asarray(np.arange(8) % 3)
    for _ in range(3):
        _, g = softmax_cross_entropy(model(x), labels)
        model.backward(g)
        assert all(pg.grad is view for pg, view in zip(model.param_grads(), model.flat.grad_views))
        opt.step()
        opt.zero_grad()
    assert opt._groups[0].model_flat is model.flat
    assert ("adam", ("m", "v"), False) in cupy_backend._optimizer_kernels._built
    for name, a in opt.state["m"].items():
        assert isinstance(a, cp.ndarray) and cp.shares_memory(a, opt._groups[0].buffers["m"])
