"""Tensors with __dlpack__ go to the backend of their device, without a copy, or are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from gpudense import Dense
from gpudense.backends import from_dlpack
from gpudense.functional import dense_act_backward, dense_act_forward, dense_backward, dense_forward

torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0; in no extra)")


def test_a_cpu_tensor_becomes_a_numpy_view_of_its_memory():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a, none = from_dlpack(t, None)
    assert none is None and isinstance(a, np.ndarray)
    assert a.ctypes.data == t.data_ptr()  # the same memory: no copy
    t[0, 0] = 42.0
    assert a[0, 0] == 42.0


def test_functional_api_takes_cpu_tensors():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    y = dense_forward(x, w, b)
    np.testing.assert_allclose(y, (x @ w + b).numpy(), rtol=1e-12)
    out = dense_act_forward(x, w, b, activation="relu")
    np.testing.assert_allclose(out.y, torch.relu(x @ w + b).numpy(), rtol=1e-12)
    dy = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    grads = dense_backward(dy, x, w)
    np.testing.assert_allclose(grads.dx, (dy @ w.T).numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads.dw, (x.T @ dy).numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads.db, dy.sum(0).numpy(), rtol=1e-12)
    act_grads = dense_act_backward(dy, x, w, out.saved, activation="relu")
    mask = torch.from_numpy(out.saved) > 0
    np.testing.assert_allclose(act_grads.dw, (x.T @ (dy * mask)).numpy(), rtol=1e-12)


def test_dense_keeps_the_tensor_memory_for_backward():
    layer = Dense(3, 2, backend="numpy", rng=0, dtype="float32")
    x = torch.randn(4, 3)
    y = layer(x)
    np.testing.assert_allclose(y, x.numpy() @ layer.w + layer.b, rtol=1e-6)
    dx = layer.backward(torch.ones(4, 2))
    np.testing.assert_allclose(layer.dw, x.numpy().T @ np.ones((4, 2), np.float32), rtol=1e-6)
    assert dx.shape == (4, 3)


@pytest.mark.parametrize("tensor, message", [
    (lambda: torch.ones(2, 3, dtype=torch.bfloat16), "dtype torch.bfloat16 cannot be taken through DLPack"),
    (lambda: torch.ones(2, 3, requires_grad=True), "require gradient"),
    (lambda: torch.ones(2, 3, device="meta"), "cannot ask its DLPack device"),
])
def test_clear_errors(tensor, message):
    with pytest.raises(TypeError, match=message):
        dense_forward(tensor(), np.ones((3, 2), np.float32))


def test_a_foreign_device_is_named():
    class OnMetal:
        def __dlpack__(self, **kw):
            raise AssertionError("never asked")

        def __dlpack_device__(self):
            return (8, 0)

    with pytest.raises(TypeError, match="lives on a Metal device; gpudense takes arrays in host memory"):
        from_dlpack(OnMetal())


def test_integer_tensors_still_meet_the_dtype_rule():
    with pytest.raises(TypeError, match="float"):
        dense_forward(torch.ones(2, 3, dtype=torch.int64), np.ones((3, 2), np.int64))


@pytest.mark.gpu
def test_a_cuda_tensor_becomes_a_cupy_view_of_its_memory():
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA (pip install torch==2.13.0 is the CPU build)")
    import cupy

    t = torch.randn(8, 5, device="cuda")
    w = torch.randn(5, 3, device="cuda")
    a, = from_dlpack(t)
    assert isinstance(a, cupy.ndarray) and a.data.ptr == t.data_ptr()
    y = dense_forward(t, w)
    np.testing.assert_allclose(cupy.asnumpy(y), (t @ w).cpu().numpy(), rtol=1e-4, atol=1e-5)
    layer = Dense(5, 3, backend="cupy", rng=0)
    assert isinstance(layer(t), cupy.ndarray)
