"""The dense layer's math, written once against the backend's array module.

Shapes: ``x`` is ``(..., n_in)``, ``w`` is ``(n_in, n_out)`` with ``w[i, j]``
joining input ``i`` to neuron ``j``, ``b`` is ``(n_out,)``. Leading dimensions
of ``x`` count as one batch of ``batch = prod(x.shape[:-1])`` rows.

    forward:   y  = x @ w + b
    backward:  dx = dy @ w.T        dw = x.T @ dy        db = sum over the batch of dy

With an activation (:func:`dense_act_forward`, :func:`dense_act_backward`),
``z = x @ w + b`` and ``y = act(z)``; the backward pass takes dL/dy, forms
``dz = dy * act'(z)`` and continues as above with ``dz`` in place of ``dy``.

The operations whose best form differs by device go through the backend:
the products (``Backend.matmul``: cuBLAS on CuPy; float32 for 16-bit types
on NumPy), the bias gradient (``Backend.bias_grad``), the accumulating
product ``dw += x.T @ dy`` (``Backend.matmul_acc``) and the activation's
passes (``Backend.bias_act`` after the forward product, one pass adding
``b`` and applying the activation; ``Backend.act_bias_grad``, one pass
forming ``dz`` and ``db`` together on CuPy) and the weight gradient
(``Backend.weight_grad``: an outer product for a batch of one on NumPy).
While profiling (``backend.profiled()``, ``TrainConfig(profile=True)``), each
stage is one NVTX range: ``gpudense.forward``, ``gpudense.backward.act``
(``dz`` and ``db`` of a layer with an activation), ``gpudense.backward.dx``,
``gpudense.backward.dw``, ``gpudense.backward.db``.

The public functions are the one door to the math (:class:`~gpudense.layer.Dense`
calls them too). They take NumPy or CuPy arrays, or tensors with ``__dlpack__``
(PyTorch, JAX: taken without a copy, :func:`~gpudense.backends.from_dlpack`).
Each checks every rule once per call: a short test that every argument is as
usual (one array type, one floating dtype, fitting shapes); only where it
fails do the checks with messages run.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gpudense._checks import (FLOAT_DTYPES, check_bool, check_float_array, check_layer, check_no_overlap,
                              describe_array, memory_owner)
from gpudense._nvtx import is_profiling
from gpudense.activation_math import ACTIVATION_NAMES, check_activation
from gpudense.backends import _load, backend_of, from_dlpack

__all__ = ["DenseActOutput", "DenseGrads", "dense_act_backward", "dense_act_forward", "dense_backward",
           "dense_forward"]

#: The backend name of each exact array type the checks have passed (numpy.ndarray, cupy.ndarray, ...).
_KINDS: dict[type, str] = {np.ndarray: "numpy"}
_ACTIVATIONS = frozenset(ACTIVATION_NAMES) | {None}
#: The dtypes the checks have passed (float16, float32, float64; bfloat16 once seen).
_FLOATS = set(FLOAT_DTYPES)


class DenseActOutput(NamedTuple):
    """What :func:`dense_act_forward` returns: the output and what the backward pass needs."""

    y: Any  #: act(x @ w + b), shape ``(..., n_out)``
    saved: Any  #: for :func:`dense_act_backward`: ``y`` itself (relu, tanh) or ``z = x @ w + b`` (gelu)


class DenseGrads(NamedTuple):
    """Gradients of a dense layer; an entry is None when it was not asked for."""

    dx: Any  #: dL/dx, shape of ``x``, or None when ``input_grad=False``
    dw: Any  #: dL/dw, shape ``(n_in, n_out)``
    db: Any  #: dL/db, shape ``(n_out,)``, or None when ``bias=False``


def _batch(x: Any) -> int:
    """Rows of the batch: the product of x's leading dimensions (1 for a single sample)."""
    shape = x.shape
    return shape[0] if len(shape) == 2 else math.prod(shape[:-1])


def _native(*arrays: Any) -> bool:
    """Whether no argument needs DLPack: each is None or of an array type the checks have passed before."""
    for a in arrays:
        if a is not None and type(a) not in _KINDS:
            return False
    return True


def _usual(x: Any, w: Any, b: Any) -> Any:
    """The backend of ``x``, ``w``, ``b`` when they are as usual (else None: run the checks with messages).

    As usual: one exact array type the checks have passed before, one
    floating dtype, ``w`` 2-D, ``x``'s last dimension ``w``'s first, ``b``
    None or of shape ``(n_out,)``.
    """
    t = type(w)
    kind = _KINDS.get(t)
    if kind is None or type(x) is not t:
        return None
    dt, ws, xs = w.dtype, w.shape, x.shape
    if len(ws) != 2 or not xs or xs[-1] != ws[0] or x.dtype != dt or dt not in _FLOATS:
        return None
    if b is not None and (type(b) is not t or b.dtype != dt or b.shape != ws[1:]):
        return None
    return _load(kind)


def _checked_backend(x: Any, w: Any, b: Any) -> Any:
    """The backend of ``x``, ``w``, ``b`` after every check, each failing with a message naming the argument."""
    backend = backend_of(x, w, b)
    check_layer(x, w, b)
    _KINDS[type(w)] = backend.name
    _FLOATS.add(w.dtype)
    return backend


def _check_out(name: str, a: Any, shape: tuple[int, ...], like: Any) -> None:
    """``out.<name>`` must be a C-contiguous array of ``shape`` and ``like``'s dtype and backend."""
    backend_of(a, like)  # raises on a NumPy/CuPy mix or a non-array
    if tuple(a.shape) != shape or a.dtype != like.dtype or not a.flags.c_contiguous:
        raise ValueError(
            f"out.{name} must be a C-contiguous array of shape {shape} and dtype {like.dtype}; got "
            f"{describe_array(a)} (C-contiguous: {bool(a.flags.c_contiguous)})"
        )


def dense_forward(x: Any, w: Any, b: Any = None) -> Any:
    """Forward pass of a dense layer: ``y = x @ w + b``.

    Args:
        x: Input, shape ``(..., n_in)``; NumPy or CuPy, float16, bfloat16,
            float32 or float64.
        w: Weights, shape ``(n_in, n_out)``; ``w[i, j]`` joins input ``i`` to
            neuron ``j``. Same backend and dtype as ``x``.
        b: Optional bias, shape ``(n_out,)``, same backend and dtype.

    Returns:
        ``y`` of shape ``(..., n_out)``, a new array on the inputs' backend.

    Raises:
        TypeError: non-floating or mismatched dtypes, non-arrays, or NumPy and
            CuPy arrays mixed.
        ValueError: wrong ranks or mismatched sizes.

    Example:
        >>> import numpy as np
        >>> x = np.ones((2, 3), np.float32); w = np.ones((3, 4), np.float32)
        >>> dense_forward(x, w, np.zeros(4, np.float32)).tolist()
        [[3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]]
    """
    if not _native(x, w, b):
        x, w, b = from_dlpack(x, w, b)
    backend = _usual(x, w, b) or _checked_backend(x, w, b)
    return _forward(backend, x, w, b, None).y


def dense_act_forward(x: Any, w: Any, b: Any = None, *, activation: str | None) -> DenseActOutput:
    """Forward pass of a dense layer with an activation: ``y = act(x @ w + b)``.

    One matrix product, then one pass that adds ``b`` and applies the
    activation (a RawKernel on CuPy). What the backward pass needs is kept
    and returned as ``saved``: ``y`` itself for relu and tanh (no extra
    memory) and ``z = x @ w + b`` for gelu.

    Args:
        x: Input, shape ``(..., n_in)``; NumPy or CuPy, float16, bfloat16,
            float32 or float64.
        w: Weights, shape ``(n_in, n_out)``, same backend and dtype.
        b: Optional bias, shape ``(n_out,)``, same backend and dtype.
        activation: ``"relu"``, ``"gelu"`` (the tanh form, PyTorch's
            ``gelu(approximate="tanh")``), ``"tanh"``, or None (then
            ``y = x @ w + b`` and ``saved`` is None).

    Returns:
        ``DenseActOutput(y, saved)``, both of shape ``(..., n_out)``.

    Raises:
        TypeError, ValueError: as :func:`dense_forward`; ValueError for an
            unknown activation.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1.0, -2.0]]); w = np.eye(2)
        >>> y, saved = dense_act_forward(x, w, np.zeros(2), activation="relu")
        >>> y.tolist(), saved is y
        ([[1.0, 0.0]], True)
    """
    act = activation if activation in _ACTIVATIONS else check_activation(activation, allow_none=True)
    if not _native(x, w, b):
        x, w, b = from_dlpack(x, w, b)
    backend = _usual(x, w, b) or _checked_backend(x, w, b)
    return _forward(backend, x, w, b, act)


def _forward(backend: Any, x: Any, w: Any, b: Any, activation: str | None) -> DenseActOutput:
    """``act(x @ w + b)`` and what the backward pass needs, for checked arguments."""
    flat = x.ndim == 2  # a batch of rows: no reshapes
    x2 = x if flat else x.reshape(_batch(x), w.shape[0])
    y, saved = _stage(is_profiling(), backend, "gpudense.forward", _forward_2d, backend, x2, w, b, activation)
    if flat:
        return DenseActOutput(y, saved)
    shape = tuple(x.shape[:-1]) + (w.shape[1],)
    y_out = y.reshape(shape)
    return DenseActOutput(y_out, None if saved is None else y_out if saved is y else saved.reshape(shape))


def _forward_2d(backend: Any, x2: Any, w: Any, b: Any, activation: str | None) -> tuple[Any, Any]:
    y = backend.matmul(x2, w)
    if activation is not None:
        return backend.bias_act(y, b, activation)
    if b is not None:
        y += b
    return y, None


def _stage(profile: bool, backend: Any, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, inside the NVTX range ``name`` when ``profile``."""
    if not profile:
        return fn(*args, **kwargs)
    with backend.nvtx_range(name):
        return fn(*args, **kwargs)


def dense_backward(
    dy: Any,
    x: Any,
    w: Any,
    *,
    bias: bool = True,
    input_grad: bool = True,
    out: DenseGrads | None = None,
    accumulate: bool = False,
) -> DenseGrads:
    """Backward pass of a dense layer.

    Args:
        dy: dL/dy, shape ``(..., n_out)`` matching the forward output.
        x: The forward input, shape ``(..., n_in)``.
        w: The weights, shape ``(n_in, n_out)``.
        bias: Whether the layer has a bias; if False, ``db`` is None.
        input_grad: Whether to compute ``dx``; if False, ``dx`` is None and
            no matrix product is spent on it (the first layer of a network
            needs no dL/dx).
        out: Optional :class:`DenseGrads` of arrays to write the gradients
            into (C-contiguous, of the gradient's shape, dtype and backend,
            apart from the inputs and each other); None gets a new array.
        accumulate: Add ``dw`` and ``db`` into ``out.dw`` and ``out.db``
            (which must be given) instead of overwriting them, as a layer
            accumulates gradients over several backward calls. On CuPy this
            costs no extra pass (cuBLAS ``beta = 1``; the bias-gradient
            kernel adds in its last pass). ``dx`` is always written, never added.

    Returns:
        ``DenseGrads(dx, dw, db)`` with ``dx = dy @ w.T`` (shape of ``x``),
        ``dw = x.T @ dy`` (``(n_in, n_out)``) and ``db = dy`` summed over the
        batch (``(n_out,)``); with ``out``, its arrays. An empty batch gives
        ``dw = 0``, ``db = 0`` (or leaves them unchanged when accumulating).

    Raises:
        TypeError, ValueError: as :func:`dense_forward`, when ``dy``'s shape or dtype differs from the
            forward output's, ``bias`` or ``input_grad`` is not a bool, or ``out`` does not fit or overlaps.

    Example:
        >>> import numpy as np
        >>> x = np.ones((2, 3)); w = np.ones((3, 4)); dy = np.ones((2, 4))
        >>> g = dense_backward(dy, x, w)
        >>> g.dx.shape, g.dw.shape, g.db.tolist()
        ((2, 3), (3, 4), [2.0, 2.0, 2.0, 2.0])
        >>> g2 = dense_backward(dy, x, w, out=g, accumulate=True)  # adds into g.dw, g.db
        >>> g.db.tolist()
        [4.0, 4.0, 4.0, 4.0]
    """
    if not _native(dy, x, w):
        dy, x, w = from_dlpack(dy, x, w)
    backend, outs = _check_backward(dy, x, w, None, bias, input_grad, out, accumulate)
    _check_apart(backend, outs, dy, x, w, None)
    return _backward(backend, dy, x, w, None, None, bias, input_grad, outs, accumulate)


def dense_act_backward(
    dy: Any,
    x: Any,
    w: Any,
    saved: Any,
    *,
    activation: str | None,
    bias: bool = True,
    input_grad: bool = True,
    out: DenseGrads | None = None,
    accumulate: bool = False,
) -> DenseGrads:
    """Backward pass of a dense layer with an activation, ``y = act(x @ w + b)``.

    With ``z = x @ w + b``: ``dz = dy * act'(z)``, then ``dx = dz @ w.T``,
    ``dw = x.T @ dz`` and ``db = dz`` summed over the batch. On CuPy ``dz``
    and ``db`` come from one RawKernel pass that reads ``dy`` and ``saved``
    once and writes ``dz`` once; ``db`` is summed deterministically, in the
    order of the bias-gradient kernel.

    Args:
        dy: dL/dy, shape ``(..., n_out)`` matching the forward output.
        x: The forward input, shape ``(..., n_in)``.
        w: The weights, shape ``(n_in, n_out)``.
        saved: What :func:`dense_act_forward` returned as ``saved``.
        activation: The forward pass's activation (None: as :func:`dense_backward`).
        bias, input_grad, out, accumulate: As for :func:`dense_backward`:
            ``dw`` and ``db`` are the gradients of the pre-activation's
            parameters, added into ``out`` with ``accumulate``.

    Returns:
        ``DenseGrads(dx, dw, db)`` (``dx`` None when ``input_grad`` is False,
        ``db`` None when ``bias`` is False).

    Raises:
        TypeError, ValueError: as :func:`dense_backward`, or when ``saved``
            does not have ``dy``'s shape, dtype and backend.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1.0, -2.0]]); w = np.eye(2)
        >>> fwd = dense_act_forward(x, w, np.zeros(2), activation="relu")
        >>> g = dense_act_backward(np.ones((1, 2)), x, w, fwd.saved, activation="relu")
        >>> g.dx.tolist(), g.db.tolist()
        ([[1.0, 0.0]], [1.0, 0.0])
    """
    act = activation if activation in _ACTIVATIONS else check_activation(activation, allow_none=True)
    if act is not None and saved is None:
        raise ValueError(f"saved must be what dense_act_forward returned for activation {act!r}; got None")
    if not _native(dy, x, w, saved):
        dy, x, w, saved = from_dlpack(dy, x, w, saved)
    backend, outs = _check_backward(dy, x, w, saved if act is not None else None, bias, input_grad, out,
                                    accumulate)
    _check_apart(backend, outs, dy, x, w, saved)
    return _backward(backend, dy, x, w, saved, act, bias, input_grad, outs, accumulate)


def _backward(backend: Any, dy: Any, x: Any, w: Any, saved: Any, activation: str | None, bias: bool,
              input_grad: bool, out: DenseGrads, accumulate: bool) -> DenseGrads:
    """The backward pass for checked arguments (``out`` a DenseGrads of None or fitting arrays)."""
    profile = is_profiling()
    flat = x.ndim == 2  # a batch of rows: no reshapes
    if flat:
        x2, dy2 = x, dy
    else:
        batch, (n_in, n_out) = _batch(x), w.shape
        x2, dy2 = x.reshape(batch, n_in), dy.reshape(batch, n_out)
    if activation is None:
        dz = dy2
        db = _stage(profile, backend, "gpudense.backward.db", backend.bias_grad, dy2, out.db,
                    accumulate=accumulate) if bias else None
    else:
        dz, db = _stage(profile, backend, "gpudense.backward.act", backend.act_bias_grad, dy2,
                        saved if flat else saved.reshape(dy2.shape), activation, out.db,
                        accumulate=accumulate, bias=bias)
    dx = None
    if input_grad:
        if out.dx is None:
            dx = _stage(profile, backend, "gpudense.backward.dx", backend.matmul, dz, w.T)
            dx = dx if flat else dx.reshape(x.shape)
        else:
            _stage(profile, backend, "gpudense.backward.dx", backend.matmul, dz, w.T,
                   out=out.dx if flat else out.dx.reshape(x2.shape))
            dx = out.dx
    dw = _stage(profile, backend, "gpudense.backward.dw", backend.weight_grad, x2, dz, out.dw, accumulate=accumulate)
    return DenseGrads(dx, dw, db)


def _check_backward(dy: Any, x: Any, w: Any, saved: Any, bias: Any, input_grad: Any, out: Any,
                    accumulate: Any) -> tuple[Any, DenseGrads]:
    """The backend and ``out`` (None entries where not given) of checked backward arguments."""
    backend = _usual(x, w, None)
    t = type(w)
    if backend is None or type(dy) is not t:
        return _checked_backward(dy, x, w, saved, bias, input_grad, out, accumulate)
    dt, ys, xs = w.dtype, dy.shape, x.shape
    if (dy.dtype == dt and len(ys) == len(xs) and ys[:-1] == xs[:-1] and ys[-1] == w.shape[1]
            and (saved is None or (type(saved) is t and saved.dtype == dt and saved.shape == ys))
            and (bias is True or bias is False) and (input_grad is True or input_grad is False)
            and (accumulate is True or accumulate is False) and (out is None or type(out) is DenseGrads)):
        dx, dw, db = (None, None, None) if out is None else out
        dx, db = (dx if input_grad else None), (db if bias else None)
        if ((dx is None or (type(dx) is t and dx.dtype == dt and dx.shape == xs and dx.flags.c_contiguous))
                and (dw is None or (type(dw) is t and dw.dtype == dt and dw.shape == w.shape
                                    and dw.flags.c_contiguous))
                and (db is None or (type(db) is t and db.dtype == dt and db.shape == ys[-1:]
                                    and db.flags.c_contiguous))
                and not (accumulate and (dw is None or (bias and db is None)))):
            return backend, out if out is not None and dx is out.dx and db is out.db else DenseGrads(dx, dw, db)
    return _checked_backward(dy, x, w, saved, bias, input_grad, out, accumulate)


def _check_apart(backend: Any, outs: DenseGrads, dy: Any, x: Any, w: Any, saved: Any) -> None:
    """Refuse out arrays that share memory with an input or each other (``dx`` is written before ``dw = x.T @ dy``
    reads ``x``); arrays of different owners are apart untested, others go through ``may_share_memory``."""
    # CuPy arrays made on one memory pointer each have base None: only NumPy's owners can be trusted.
    owner = memory_owner if backend.name == "numpy" else (lambda a: None)
    apart = [(a, owner(a)) for a in (dy, x, w, saved) if a is not None]  # what the next out must stay apart from
    may_share = backend.xp.may_share_memory
    for a in outs:
        if a is not None:
            root = owner(a)
            for b, other in apart:
                if (root is None or other is None or root is other) and may_share(a, b):
                    check_no_overlap(backend.xp, {"out.dx": outs.dx, "out.dw": outs.dw, "out.db": outs.db},
                                     {"dy": dy, "x": x, "w": w, "saved": saved})
            apart.append((a, root))


def _checked_backward(dy: Any, x: Any, w: Any, saved: Any, bias: Any, input_grad: Any, out: Any,
                      accumulate: Any) -> tuple[Any, DenseGrads]:
    """Every check of the backward arguments, each failing with a message naming the argument."""
    backend = _checked_backend(x, w, None)
    backend_of(dy, x, w, saved)
    check_float_array("dy", dy)
    n_in, n_out = w.shape
    expected = tuple(x.shape[:-1]) + (n_out,)
    if tuple(dy.shape) != expected:
        raise ValueError(
            f"dy must have the forward output's shape {expected}; got shape {tuple(dy.shape)}"
        )
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have the forward dtype {x.dtype}; got {dy.dtype}")
    if saved is not None and (tuple(saved.shape) != tuple(dy.shape) or saved.dtype != dy.dtype):
        raise ValueError(
            f"saved must be what dense_act_forward returned, of dy's shape {tuple(dy.shape)} and dtype "
            f"{dy.dtype}; got {describe_array(saved)}"
        )
    check_bool("bias", bias)
    check_bool("input_grad", input_grad)
    check_bool("accumulate", accumulate)
    out_dx = out_dw = out_db = None
    if out is not None:
        if not isinstance(out, DenseGrads):
            raise TypeError(f"out must be a DenseGrads(dx, dw, db) of arrays or None; got {type(out).__name__}")
        out_dx, out_dw, out_db = out
        if out_dx is not None and input_grad:
            _check_out("dx", out_dx, tuple(x.shape), w)
        if out_dw is not None:
            _check_out("dw", out_dw, (n_in, n_out), w)
        if out_db is not None and bias:
            _check_out("db", out_db, (n_out,), w)
    if accumulate and (out_dw is None or (bias and out_db is None)):
        raise ValueError("accumulate=True adds into out.dw and out.db: pass out=DenseGrads(None, dw, db) "
                         "with the arrays to add into")
    return backend, DenseGrads(out_dx if input_grad else None, out_dw, out_db if bias else None)
