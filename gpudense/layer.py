"""``Dense``: parameters and gradients of a fully-connected layer.

The math is in :mod:`gpudense.functional`; this class holds ``w``, ``b``,
their gradients and the forward input, and calls it.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gpudense._checks import as_generator, check_bool, describe_array, float_dtype, positive_int
from gpudense.activation_math import check_activation
from gpudense.backends import Backend, from_dlpack, get_backend
from gpudense.functional import DenseGrads, dense_act_backward, dense_act_forward
from gpudense.saved import snapshot, verify

__all__ = ["Dense", "ParamGrad"]


class ParamGrad(NamedTuple):
    """A parameter, its gradient (None before the first backward) and its name."""

    name: str
    param: Any
    grad: Any


class Dense:
    """A fully-connected layer: ``y = x @ w + b``, or ``y = act(x @ w + b)`` with an activation.

    ``w`` has shape ``(in_features, out_features)``: ``w[i, j]`` joins input
    ``i`` to neuron ``j``. (PyTorch's ``nn.Linear.weight`` is the transpose,
    ``(out_features, in_features)``.) ``b`` has shape ``(out_features,)``.

    Args:
        in_features: Size of each input sample, ``n_in``.
        out_features: Number of neurons, ``n_out``.
        activation: None (default), ``"relu"``, ``"gelu"`` (the tanh form,
            PyTorch's ``gelu(approximate="tanh")``) or ``"tanh"``: applied to
            ``x @ w + b`` in the same pass that adds ``b`` (see
            :func:`~gpudense.functional.dense_act_forward`).
        bias: Whether the layer has a bias ``b``.
        dtype: ``"float16"``, ``"bfloat16"`` (needs ml_dtypes), ``"float32"``
            (default) or ``"float64"``.
        backend: ``"auto"`` (CuPy when a CUDA device is usable, else NumPy),
            ``"numpy"``, ``"cupy"``, or a :class:`~gpudense.backends.Backend`.
        rng: A ``numpy.random.Generator`` or an int seed for the initial
            parameters; None draws fresh entropy.

    Parameters are initialised as PyTorch's ``nn.Linear``: ``w`` and ``b``
    uniform in ``[-1/sqrt(in_features), 1/sqrt(in_features))``. They are drawn
    in float64 on the host from ``rng``, so a seed gives the same layer on
    every backend.

    Gradients ``dw`` and ``db`` are None until the first :meth:`backward` and
    then accumulate across forward/backward pairs until :meth:`zero_grad`, as
    in PyTorch; each backward needs a forward of its own (a second backward
    after one forward is refused, as PyTorch refuses a second backward through
    one graph). ``w`` and ``b`` may be assigned arrays of their shape and the
    layer's dtype; anything else is refused. With
    an activation, :meth:`backward` takes dL/dy of the activated output and
    ``dw``, ``db`` are the gradients of ``w``, ``b`` as always.

    Example:
        >>> layer = Dense(3, 2, backend="numpy", rng=0)
        >>> y = layer(np.ones((4, 3), np.float32))
        >>> dx = layer.backward(np.ones_like(y))
        >>> y.shape, dx.shape, layer.dw.shape, layer.db.tolist()
        ((4, 2), (4, 3), (3, 2), [4.0, 4.0])
        >>> Dense(3, 2, activation="gelu", backend="numpy", rng=0)
        Dense(in_features=3, out_features=2, activation='gelu', bias=True, dtype=float32, backend='numpy')
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str | None = None,
        bias: bool = True,
        dtype: Any = "float32",
        backend: str | Backend = "auto",
        rng: Any = None,
    ) -> None:
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        #: None, "relu", "gelu" or "tanh".
        self.activation = check_activation(activation, allow_none=True)
        check_bool("bias", bias)
        self.dtype = float_dtype(dtype)
        self.backend = get_backend(backend)
        self._w: Any = None
        self._b: Any = None
        self.dw: Any = None
        self.db: Any = None
        self._x: Any = None
        self._spent = False  # a backward has used the saved input of the last forward
        self._saved: Any = None  # what the activation's backward needs (None without one)
        self._copies: Any = None  # copies of _x and _saved while gpudense.saved checks them
        self._dw_keep: Any = None  # the gradient arrays, kept across zero_grad and reused
        self._db_keep: Any = None
        self._keep: DenseGrads | None = None  # DenseGrads(None, _dw_keep, _db_keep), made once
        self._has_bias = bias
        self.reset_parameters(rng)

    @property
    def bias(self) -> bool:
        """Whether the layer has a bias."""
        return self._has_bias

    @property
    def w(self) -> Any:
        """The weights, ``(in_features, out_features)``; an array assigned must have that shape and the dtype."""
        return self._w

    @w.setter
    def w(self, value: Any) -> None:
        self._w = self._param("w", value, (self.in_features, self.out_features))

    @property
    def b(self) -> Any:
        """The bias, ``(out_features,)``, or None without one; an array assigned must have that shape and the dtype."""
        return self._b

    @b.setter
    def b(self, value: Any) -> None:
        if not self._has_bias and value is not None:
            raise ValueError("Dense.b of a layer without a bias (bias=False) must stay None")
        self._b = self._param("b", value, (self.out_features,)) if self._has_bias else None

    def _param(self, name: str, a: Any, shape: tuple[int, ...]) -> Any:
        if getattr(a, "shape", None) != shape or getattr(a, "dtype", None) != self.dtype:
            got = describe_array(a) if hasattr(a, "dtype") else type(a).__name__
            raise ValueError(f"Dense.{name} must be an array of shape {shape} and dtype {self.dtype}, the "
                             f"layer's; got {got} (for another dtype, build the layer with dtype=...)")
        return a

    def reset_parameters(self, rng: Any = None) -> None:
        """Draw ``w`` and ``b`` uniform in ``±1/sqrt(in_features)`` (PyTorch's default).

        Gradients and the saved forward input are cleared.
        """
        gen = as_generator(rng)
        bound = 1.0 / math.sqrt(self.in_features)
        w = self.backend.asarray(gen.uniform(-bound, bound, size=(self.in_features, self.out_features)),
                                 dtype=self.dtype)
        b = None
        if self._has_bias:
            b = self.backend.asarray(gen.uniform(-bound, bound, size=(self.out_features,)), dtype=self.dtype)
        if self.w is None:
            self.w, self.b = w, b
        else:  # in place: the arrays may be views of a model's flat buffer
            self.w[...] = w
            if b is not None:
                self.b[...] = b
        self.dw = self.db = self._x = self._saved = self._copies = None
        self._spent = False

    def forward(self, x: Any) -> Any:
        """``y = act(x @ w + b)`` for ``x`` of shape ``(..., in_features)``; keeps ``x`` for backward.

        With an activation, also keeps what its derivative needs (``y`` for
        relu and tanh, ``x @ w + b`` for gelu). Nothing is copied: change
        ``x`` in place only after :meth:`backward` (see :mod:`gpudense.saved`).
        A tensor with ``__dlpack__`` (PyTorch, JAX) is taken without a copy
        (:func:`~gpudense.backends.from_dlpack`).
        """
        if type(x) is not type(self.w):  # a tensor with __dlpack__: kept as the array it views
            x, = from_dlpack(x)
        y, saved = dense_act_forward(x, self.w, self.b, activation=self.activation)
        self._x, self._saved, self._spent = x, saved, False
        self._copies = snapshot(x, saved)
        return y

    __call__ = forward

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        """Add this batch's ``dw``, ``db`` to the gradients and return ``dx``.

        The first backward after :meth:`zero_grad` writes the gradients into
        the layer's kept gradient arrays (allocated once; views of a model's
        flat gradient buffer inside a :class:`~gpudense.nn.Sequential`); later
        ones add to them.

        Args:
            dy: dL/dy, the shape of the last forward output.
            input_grad: Whether to compute and return ``dx``; if False, no
                matrix product is spent on it and None is returned.

        Returns:
            ``dx``, shape of the last forward input, or None.
        """
        if type(dy) is not type(self.w):
            dy, = from_dlpack(dy)
        x = self._x
        if x is None and self._spent:
            raise RuntimeError("Dense.backward called twice after one forward: the first used the saved input; "
                               "run forward again before each backward (gradients add up until zero_grad)")
        if x is None:
            raise RuntimeError("Dense.backward called before forward: there is no saved input")
        if self._copies is not None:
            verify("Dense.backward", ("its input x", f"its output (what {self.activation} saves)"),
                   (x, self._saved), self._copies)
        accumulate = self.dw is not None
        out = DenseGrads(None, self.dw, self.db) if accumulate else self._grad_arrays()
        grads = dense_act_backward(dy, x, self.w, self._saved, activation=self.activation, bias=self._has_bias,
                                   input_grad=input_grad, out=out, accumulate=accumulate)
        self.dw, self.db = grads.dw, grads.db
        self._x = self._saved = self._copies = None  # used: a second backward is refused
        self._spent = True
        return grads.dx

    def zero_grad(self) -> None:
        """Forget the accumulated gradients: ``dw`` and ``db`` become None, as PyTorch's ``set_to_none``.

        The arrays are kept and the next :meth:`backward` writes into them,
        so no gradient memory is allocated per step: copy a gradient to keep
        its values past the next backward.
        """
        self.dw = self.db = None

    def _grad_arrays(self) -> DenseGrads:
        """``DenseGrads(None, dw, db)``: the kept gradient arrays, made on first use."""
        if self._keep is not None and self._keep.dw is self._dw_keep and self._keep.db is self._db_keep:
            return self._keep
        if self._dw_keep is None:
            self._dw_keep = self.backend.xp.empty((self.in_features, self.out_features), dtype=self.dtype)
        if self._has_bias and self._db_keep is None:
            self._db_keep = self.backend.xp.empty((self.out_features,), dtype=self.dtype)
        self._keep = DenseGrads(None, self._dw_keep, self._db_keep)
        return self._keep

    def bind(self, w: Any, b: Any, dw: Any, db: Any) -> None:
        """Make the layer's parameters and gradient arrays the given arrays (views of a flat buffer).

        The current values of ``w`` and ``b`` (and of the gradients, where a
        backward has run since :meth:`zero_grad`) are copied in first, so the
        layer computes the same as before. :class:`~gpudense.nn.Sequential`
        uses this to lay all its layers' parameters and gradients out in two
        flat buffers (:class:`~gpudense.flat.FlatParams`).

        Args:
            w, dw: C-contiguous ``(in_features, out_features)`` arrays of the
                layer's backend and dtype.
            b, db: C-contiguous ``(out_features,)`` arrays, or None for a
                layer without a bias.

        Raises:
            ValueError: an array that does not fit.

        Example:
            >>> layer = Dense(3, 2, backend="numpy", rng=0)
            >>> buf = np.zeros(16, np.float32)
            >>> w_before = layer.w.copy()
            >>> layer.bind(buf[:6].reshape(3, 2), buf[6:8], np.zeros((3, 2), np.float32), np.zeros(2, np.float32))
            >>> np.shares_memory(layer.w, buf), bool((layer.w == w_before).all())
            (True, True)
        """
        shapes = {"w": (self.in_features, self.out_features), "dw": (self.in_features, self.out_features)}
        if self._has_bias:
            shapes.update(b=(self.out_features,), db=(self.out_features,))
        given = {"w": w, "b": b, "dw": dw, "db": db}
        for name, shape in shapes.items():
            a = given[name]
            if (type(a) is not type(self.w) or tuple(a.shape) != shape or a.dtype != self.dtype
                    or not a.flags.c_contiguous):
                raise ValueError(f"bind: {name} must be a C-contiguous {type(self.w).__name__} of shape {shape} "
                                 f"and dtype {self.dtype}; got {describe_array(a) if a is not None else None}")
        w[...] = self.w
        self.w = w
        if self._has_bias:
            b[...] = self.b
            self.b = b
        if self.dw is not None:
            dw[...] = self.dw
            self.dw = dw
            if self._has_bias:
                db[...] = self.db
                self.db = db
        self._dw_keep, self._db_keep = dw, (db if self._has_bias else None)

    def param_grads(self) -> list[ParamGrad]:
        """``[ParamGrad(name, param, grad), ...]`` for optimizers to walk.

        ``param`` is the array the optimizer updates in place; ``grad`` is None
        until a backward has run. Call it again after each backward: the
        gradient arrays are created by the first backward after
        :meth:`zero_grad`.
        """
        pairs = [ParamGrad("w", self.w, self.dw)]
        if self._has_bias:
            pairs.append(ParamGrad("b", self.b, self.db))
        return pairs

    def to(self, backend: str | Backend) -> "Dense":
        """Move parameters and gradients to ``backend`` (in place); returns ``self``.

        The saved forward input is dropped: run forward again on the new backend.
        """
        target = get_backend(backend)
        if target is self.backend:
            return self
        move = target.asarray
        self.w = move(self.w)
        self.b = None if self.b is None else move(self.b)
        self.dw = None if self.dw is None else move(self.dw)
        self.db = None if self.db is None else move(self.db)
        self._x = self._saved = self._copies = self._dw_keep = self._db_keep = None
        self._spent = False
        self.backend = target
        return self

    def __repr__(self) -> str:
        act = "" if self.activation is None else f"activation={self.activation!r}, "
        return (
            f"Dense(in_features={self.in_features}, out_features={self.out_features}, {act}"
            f"bias={self._has_bias}, dtype={self.dtype.name}, backend={self.backend.name!r})"
        )

    # -- PyTorch interop -------------------------------------------------------
    # nn.Linear keeps weight of shape (out_features, in_features) and computes
    # y = x @ weight.T + bias; gpudense keeps w of shape (in_features,
    # out_features) and computes y = x @ w + b. So weight = w.T, bias = b.

    def torch_state(self) -> dict[str, np.ndarray]:
        """This layer's parameters in ``torch.nn.Linear``'s layout, as NumPy arrays.

        Returns:
            ``{"weight": w.T, "bias": b}`` (no ``"bias"`` when the layer has
            none): ``weight`` of shape ``(out_features, in_features)``, a
            C-contiguous host copy. Load it into PyTorch with
            ``linear.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})``.

        Example:
            >>> layer = Dense(3, 2, backend="numpy", rng=0)
            >>> layer.torch_state()["weight"].shape
            (2, 3)
        """
        to_numpy = self.backend.to_numpy
        state = {"weight": np.ascontiguousarray(to_numpy(self.w).T)}
        if self._has_bias:
            state["bias"] = np.array(to_numpy(self.b), copy=True)
        return state

    def load_torch_state(self, state: Any) -> "Dense":
        """Copy parameters from a ``torch.nn.Linear`` state into this layer, in place.

        Args:
            state: A mapping with ``"weight"`` of shape ``(out_features,
                in_features)`` (the transpose of ``w``) and, when the layer has a
                bias, ``"bias"`` of shape ``(out_features,)``: e.g.
                ``linear.state_dict()`` (CPU tensors), or NumPy/CuPy arrays.
                Floating values are cast to this layer's dtype.

        Returns:
            ``self``; gradients are cleared.

        Raises:
            ValueError: a key missing or unexpected, or a shape that does not fit.
            TypeError: a value that is not a floating array.
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a mapping like nn.Linear.state_dict(); got {type(state).__name__}")
        want = {"weight", "bias"} if self._has_bias else {"weight"}
        got = set(state.keys())
        if got != want:
            raise ValueError(
                f"a torch.nn.Linear state for this layer has keys {sorted(want)}; got {sorted(got)}"
            )
        weight = self._from_torch("weight", state["weight"], (self.out_features, self.in_features))
        bias = None
        if self._has_bias:
            bias = self._from_torch("bias", state["bias"], (self.out_features,))
        self.w[...] = weight.T
        if bias is not None:
            self.b[...] = bias
        self.dw = self.db = self._x = self._saved = self._copies = None
        self._spent = False
        return self

    @classmethod
    def from_torch_state(
        cls, state: Any, *, activation: str | None = None, dtype: Any = "float32",
        backend: str | Backend = "auto",
    ) -> "Dense":
        """A new layer from a ``torch.nn.Linear`` state (``weight`` (out, in), optional ``bias``).

        The sizes come from ``weight``'s shape, the bias from whether
        ``"bias"`` is present; ``w`` becomes ``weight.T``. ``activation`` is
        the layer's own (``nn.Linear`` has none; pass the one that follows it).

        Example:
            >>> layer = Dense.from_torch_state({"weight": np.ones((2, 3))}, backend="numpy")
            >>> layer.w.shape, layer.bias
            ((3, 2), False)
        """
        if not hasattr(state, "keys") or "weight" not in state:
            raise ValueError("state must be a mapping like nn.Linear.state_dict(), with a 'weight' entry")
        shape = tuple(getattr(state["weight"], "shape", ()))
        if len(shape) != 2:
            raise ValueError(f"weight must be 2-D (out_features, in_features); got shape {shape}")
        out_features, in_features = shape
        layer = cls(in_features, out_features, activation=activation, bias="bias" in state, dtype=dtype,
                    backend=backend, rng=0)
        return layer.load_torch_state(state)

    def _from_torch(self, name: str, value: Any, shape: tuple[int, ...]) -> Any:
        try:
            a = self.backend.asarray(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be an array or a CPU tensor; got {type(value).__name__}: {exc}") from exc
        if a.dtype.kind != "f" and a.dtype.name != "bfloat16":
            raise TypeError(f"{name} must be a floating array; got dtype {a.dtype}")
        if tuple(a.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} (nn.Linear layout: weight is (out_features, "
                f"in_features)); got {tuple(a.shape)}"
            )
        return a
