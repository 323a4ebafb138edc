"""Training on the CuPy backend agrees with NumPy; checkpoints cross between GPU and CPU.

Every test carries the ``gpu`` marker: conftest.py skips it, with the reason,
where CuPy or a usable CUDA device is missing.

Tolerances: in float32 the two backends sum in different orders (cuBLAS vs
OpenBLAS), a relative difference of ~1e-7 per operation. Training amplifies
it only slowly on these problems: on the CPU, perturbing every initial
weight by a random relative 6e-8 (one float32 rounding) changed the six
epoch losses by at most 5e-8 relative (digits) and 4e-8 (the synthetic run). The test allows
1e-3, far above that. A rounding difference may move one borderline test sample, so
accuracies must agree within one test sample. The synthetic run needs only
NumPy and CuPy; the digits run (the default job) also needs scikit-learn.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from gpudense.backends import get_backend

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cupy_backend():
    """The CuPy backend (the gpu marker has skipped the test where it is unusable)."""
    return get_backend("cupy")


def test_pieces_agree_with_numpy(cupy_backend):
    from gpudense.losses import mse_loss, softmax_cross_entropy
    from gpudense.nn import get_activation
    from gpudense.optim import SGD, Adam, AdamW
    from gpudense.nn import MLP

    cp = cupy_backend.xp
    gen = np.random.default_rng(0)
    x = gen.standard_normal((33, 17)).astype(np.float32)
    dy = gen.standard_normal((33, 17)).astype(np.float32)
    for name in ("relu", "gelu", "tanh"):
        a_cpu, a_gpu = get_activation(name), get_activation(name)
        np.testing.assert_allclose(cp.asnumpy(a_gpu(cp.asarray(x))), a_cpu(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cp.asnumpy(a_gpu.backward(cp.asarray(dy))), a_cpu.backward(dy),
                                   rtol=1e-5, atol=1e-6)
    labels = gen.integers(0, 17, size=33)
    loss_c, grad_c = softmax_cross_entropy(x, labels)
    loss_g, grad_g = softmax_cross_entropy(cp.asarray(x), cp.asarray(labels))
    np.testing.assert_allclose(float(loss_g), float(loss_c), rtol=1e-6)
    np.testing.assert_allclose(cp.asnumpy(grad_g), grad_c, atol=1e-7)
    with pytest.raises(ValueError, match="labels must lie"):
        softmax_cross_entropy(cp.asarray(x), cp.asarray(labels + 17))
    with pytest.raises(TypeError, match="one backend"):
        softmax_cross_entropy(cp.asarray(x), labels)
    m_c, m_g = mse_loss(x, dy), mse_loss(cp.asarray(x), cp.asarray(dy))
    np.testing.assert_allclose(float(m_g.loss), float(m_c.loss), rtol=1e-6)

    # float64: the backends differ by ~1e-16 relative per operation, so three optimizer steps
    # agree to 1e-9 even where Adam divides a tiny gradient by eps. float16: a smoke check; a few
    # roundings at 2**-11 and Adam steps of at most lr = 1e-3 per step stay within 2e-2.
    for dtype in ("float64", "float16"):
        for factory in (lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=1e-3),
                        lambda m: Adam(m, weight_decay=1e-3), lambda m: AdamW(m)):
            models = [MLP([17, 8, 5], dtype=dtype, backend=b, rng=0) for b in ("numpy", "cupy")]
            opts = [factory(m) for m in models]
            xb = x.astype(dtype)
            for model, opt, be in zip(models, opts, ("numpy", "cupy")):
                xin = xb if be == "numpy" else cp.asarray(xb)
                lab = labels % 5 if be == "numpy" else cp.asarray(labels % 5)
                for _ in range(3):
                    _, g = softmax_cross_entropy(model(xin), lab)
                    model.backward(g)
                    opt.step()
                    opt.zero_grad()
            tol = 1e-9 if dtype == "float64" else 2e-2
            for pc, pg in zip(models[0].param_grads(), models[1].param_grads()):
                np.testing.assert_allclose(cp.asnumpy(pg.param).astype(np.float64),
                                           pc.param.astype(np.float64), rtol=tol, atol=tol, err_msg=pc.name)


#: A run that needs only NumPy and CuPy (the device check installs nothing else).
SYNTHETIC = ["--dataset", "synthetic", "--samples", "5000", "--features", "64", "--classes", "10",
             "--hidden", "64"]


@pytest.mark.parametrize(
    "dataset,n_test,min_acc",
    [
        # 1000 test samples; the NumPy run reaches 0.895 (measured on the CPU)
        (SYNTHETIC, 1000, 0.85),
        # the default job: 359 test samples, 0.969 after 6 epochs on the CPU
        ([], 359, 0.96),
    ],
    ids=["synthetic", "digits"],
)
def test_training_agrees_epoch_by_epoch(cupy_backend, dataset, n_test, min_acc):
    from gpudense.cli.train import parse_args, train

    if not dataset:
        pytest.importorskip("sklearn", reason="the digits set comes with scikit-learn")
    common = ["--quiet", "--epochs", "6", "--seed", "0", "--dtype", "float32", *dataset]
    cpu = train(parse_args(["--backend", "numpy", *common]), out=io.StringIO())
    gpu = train(parse_args(["--backend", "cupy", *common]), out=io.StringIO())
    assert gpu.model.backend.name == "cupy" and cpu.model.backend.name == "numpy"
    assert len(gpu.history.loss) == 6
    for epoch, (a, b) in enumerate(zip(cpu.history.loss, gpu.history.loss), start=1):
        assert abs(a - b) <= 1e-3 * abs(a), f"epoch {epoch}: numpy loss {a}, cupy loss {b}"
    assert abs(cpu.test_accuracy - gpu.test_accuracy) <= 1 / n_test + 1e-12
    assert gpu.test_accuracy >= min_acc and cpu.test_accuracy >= min_acc


def test_checkpoint_saved_on_gpu_loads_on_cpu_and_back(cupy_backend, tmp_path):
    from gpudense.checkpoint import load_checkpoint, save_checkpoint
    from gpudense.cli.train import parse_args, train
    from gpudense.nn import MLP
    from gpudense.optim import Adam

    cp = cupy_backend.xp
    gpu_path = str(tmp_path / "gpu.npz")
    gpu = train(parse_args(["--backend", "cupy", "--quiet", "--epochs", "1", *SYNTHETIC, "--save", gpu_path]),
                out=io.StringIO())
    ckpt = load_checkpoint(gpu_path)
    cpu_model = MLP([64, 64, 10], backend="numpy", rng=1)
    cpu_opt = Adam(cpu_model)
    rng = np.random.default_rng()
    ckpt.restore(cpu_model, cpu_opt, rng)
    for pg, pc in zip(gpu.model.param_grads(), cpu_model.param_grads()):
        assert isinstance(pc.param, np.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(pg.param), pc.param)
    for slot in ("m", "v"):
        for name, a in gpu.optimizer.state[slot].items():
            np.testing.assert_array_equal(cp.asnumpy(a), cpu_opt.state[slot][name])

    cpu_path = tmp_path / "cpu.npz"
    save_checkpoint(cpu_path, cpu_model, cpu_opt, epoch=ckpt.epoch, rng=rng, extra=ckpt.extra)
    gpu_model = MLP([64, 64, 10], backend="cupy", rng=2)
    gpu_opt = Adam(gpu_model)
    load_checkpoint(cpu_path).restore(gpu_model, gpu_opt)
    for pc, pg in zip(cpu_model.param_grads(), gpu_model.param_grads()):
        assert isinstance(pg.param, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(pg.param), pc.param)
    assert all(isinstance(a, cp.ndarray) for named in gpu_opt.state.values() for a in named.values())

    # and the command line resumes a GPU run on the CPU
    cont = train(parse_args(["--backend", "numpy", "--quiet", "--epochs", "2", *SYNTHETIC, "--resume", gpu_path]),
                 out=io.StringIO())
    assert len(cont.history.loss) == 2 and cont.history.loss[1] < cont.history.loss[0]


def test_batch_by_batch_copies_match_a_resident_set(cupy_backend, monkeypatch):
    from gpudense import training
    from gpudense.cli.train import parse_args, train

    args = ["--backend", "cupy", "--quiet", "--epochs", "2", *SYNTHETIC]
    resident = train(parse_args(args), out=io.StringIO())
    monkeypatch.setattr(training, "to_device", lambda data, backend: data)  # as if the set did not fit
    streamed = train(parse_args(args), out=io.StringIO())
    np.testing.assert_allclose(streamed.history.loss, resident.history.loss, rtol=1e-6)
    assert streamed.test_accuracy == resident.test_accuracy
