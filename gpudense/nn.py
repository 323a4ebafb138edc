"""Networks of :class:`~gpudense.layer.Dense` layers and activations: ``Sequential``, ``MLP``.

The activations live in :mod:`gpudense.activations` (and are importable from
here too). Every block has ``forward(x)`` (also ``__call__``), which keeps what its
backward needs, and ``backward(dy)``, which returns ``dx``. The math is
written once against the array module of its input, so the same network runs
on NumPy and on CuPy. Losses live in :mod:`gpudense.losses`, optimizers in
:mod:`gpudense.optim`.

Example:
    >>> import numpy as np
    >>> model = MLP([4, 8, 3], activation="relu", backend="numpy", rng=0)
    >>> y = model(np.ones((2, 4), np.float32))
    >>> model.backward(np.ones_like(y))          # fills the gradients
    >>> [pg.name for pg in model.param_grads()]
    ['0.w', '0.b', '2.w', '2.b']
    >>> model[0]
    Dense(in_features=4, out_features=8, activation='relu', bias=True, dtype=float32, backend='numpy')
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence as SequenceType

import numpy as np

from gpudense._checks import as_generator, check_bool, float_dtype, positive_int
from gpudense.activation_math import check_activation
from gpudense.activations import ACTIVATIONS, GELU, ReLU, Tanh, get_activation
from gpudense.backends import Backend, backend_of, get_backend
from gpudense.flat import FlatLayout, FlatParams
from gpudense.layer import Dense, ParamGrad

__all__ = ["ACTIVATIONS", "GELU", "MLP", "ReLU", "Sequential", "Tanh", "get_activation"]


class Sequential:
    """Blocks run one after another: ``y = blocks[-1](... blocks[0](x))``.

    Blocks are :class:`~gpudense.layer.Dense` layers and activations (anything
    with ``forward``, ``backward(dy, input_grad)``, ``param_grads``,
    ``zero_grad`` and ``to``). Parameters are named ``"<index>.<name>"``, e.g.
    ``"0.w"``, ``"0.b"``, ``"2.w"``: the index of the block and the block's own
    name, as PyTorch's ``state_dict`` keys.

    All layers with parameters must live on one backend and have one dtype.

    Each position needs its own block instance: a block keeps what its
    backward needs from its own forward (``Dense`` its input, ``Tanh`` its
    output), so one instance at two positions would back-propagate the second
    use's values through the first and give wrong gradients. A block that
    appears twice (nested ``Sequential`` blocks included) is a ValueError
    naming both positions; write ``Tanh()`` at each position instead of one
    ``Tanh`` twice. Sharing one layer's parameters between positions is not
    supported.

    Example:
        >>> import numpy as np
        >>> net = Sequential(Dense(3, 4, backend="numpy", rng=0), ReLU(), Dense(4, 2, backend="numpy", rng=1))
        >>> net(np.ones((5, 3), np.float32)).shape
        (5, 2)
    """

    def __init__(self, *blocks: Any) -> None:
        if not blocks:
            raise ValueError("Sequential needs at least one block")
        for i, block in enumerate(blocks):
            for attr in ("forward", "backward", "param_grads", "zero_grad", "to"):
                if not callable(getattr(block, attr, None)):
                    raise TypeError(
                        f"block {i} ({type(block).__name__}) has no {attr}(); expected a Dense "
                        "layer or an activation"
                    )
        _check_distinct(blocks)
        self.blocks: list[Any] = list(blocks)
        dense = [b for b in self.blocks if isinstance(b, Dense)]
        if len({b.backend.name for b in dense}) > 1:
            raise TypeError(
                "all Dense layers of a Sequential must live on one backend; got "
                f"{sorted({b.backend.name for b in dense})}; move them with .to(...) first"
            )
        if len({b.dtype for b in dense}) > 1:
            raise TypeError(
                f"all Dense layers of a Sequential must have one dtype; got {sorted({b.dtype.name for b in dense})}"
            )
        #: The parameters and gradients of every layer in two flat buffers
        #: (:class:`~gpudense.flat.FlatParams`), or None where a block cannot
        #: take views (a block of another kind with parameters).
        self.flat: FlatParams | None = None
        self._flatten()

    # -- containers ---------------------------------------------------------
    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> Any:
        return self.blocks[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.blocks)

    @property
    def backend(self) -> Backend:
        """The backend of the first layer with parameters (all share it)."""
        for b in self.blocks:
            if isinstance(b, Dense):
                return b.backend
        return get_backend("numpy")

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first layer with parameters (all share it)."""
        for b in self.blocks:
            if isinstance(b, Dense):
                return b.dtype
        return np.dtype(np.float32)

    # -- forward and backward ----------------------------------------------
    def forward(self, x: Any) -> Any:
        """Run ``x`` through every block; each keeps what its backward needs."""
        for block in self.blocks:
            x = block.forward(x)
        return x

    __call__ = forward

    def backward(self, dy: Any, *, input_grad: bool = False) -> Any:
        """Back-propagate ``dy`` = dL/d(output); gradients add into each layer's ``dw``, ``db``.

        Args:
            dy: dL/dy for the last forward output.
            input_grad: Whether to compute dL/dx for the network's input. By
                default (False) the first block with parameters gets
                ``input_grad=False``, saving its ``dx`` matrix product, and the
                blocks before it are not run backward at all.

        Returns:
            dL/dx when ``input_grad`` is True, else None.
        """
        first = 0
        if not input_grad:
            first = next((i for i, b in enumerate(self.blocks) if b.param_grads()), len(self.blocks))
        for i in range(len(self.blocks) - 1, first - 1, -1):
            need_dx = input_grad or i > first
            dy = self.blocks[i].backward(dy, input_grad=need_dx)
        return dy if input_grad else None

    # -- parameters ---------------------------------------------------------
    def param_grads(self) -> list[ParamGrad]:
        """``[ParamGrad("<index>.<name>", param, grad), ...]`` over all blocks, in order."""
        return [
            ParamGrad(f"{self._block_name(i)}.{pg.name}", pg.param, pg.grad)
            for i, block in enumerate(self.blocks)
            for pg in block.param_grads()
        ]

    def _block_name(self, i: int) -> str:
        """The prefix of block ``i``'s parameter names: its index."""
        return str(i)

    def zero_grad(self) -> None:
        """Forget every block's accumulated gradients."""
        for block in self.blocks:
            block.zero_grad()

    def to(self, backend: str | Backend) -> "Sequential":
        """Move every block to ``backend`` (in place); returns ``self``.

        The flat buffers are made anew on ``backend`` (when it is another).
        """
        target = get_backend(backend)
        before = self.backend
        for block in self.blocks:
            block.to(target)
        if target is not before or self.flat is None:
            self._flatten()
        return self

    def _flatten(self) -> None:
        """Lay every layer's parameters and gradients out in :attr:`flat`, each layer's arrays views of it.

        Done when the network is made and after :meth:`to`. Where a block
        with parameters is not a :class:`~gpudense.layer.Dense` (or a
        Sequential of them), or the parameters differ in dtype or array
        type, :attr:`flat` stays None and every layer keeps its own arrays.
        A nested Sequential's layers are bound to this network's buffers
        (its own :attr:`flat` becomes None).
        """
        self.flat = None
        pgs = self.param_grads()
        layers = _bindable_layers(self.blocks)
        if not pgs or layers is None or len({(type(pg.param), np.dtype(pg.param.dtype)) for pg in pgs}) != 1:
            return
        flat = FlatParams(FlatLayout([(pg.name, tuple(pg.param.shape)) for pg in pgs]),
                          backend_of(pgs[0].param).xp, pgs[0].param.dtype)
        k = 0
        for layer in layers:
            if layer.bias:
                layer.bind(flat.param_views[k], flat.param_views[k + 1], flat.grad_views[k], flat.grad_views[k + 1])
                k += 2
            else:
                layer.bind(flat.param_views[k], None, flat.grad_views[k], None)
                k += 1
        self.flat = flat

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{name: numpy array}``, host copies of every parameter (names as :meth:`param_grads`)."""
        be = self.backend
        return {pg.name: np.array(be.to_numpy(pg.param), copy=True) for pg in self.param_grads()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy parameters from ``state`` (``{name: array}``) into this network, in place.

        The names, shapes and dtypes must match :meth:`param_grads` exactly
        (no silent cast); arrays may be NumPy or CuPy, they are copied to this
        network's backend. Nothing is changed unless everything matches.

        Raises:
            ValueError: a name missing or extra, or a shape differs.
            TypeError: a dtype differs.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of name -> array; got {type(state).__name__}")
        params = self.param_grads()
        names = [pg.name for pg in params]
        missing = [n for n in names if n not in state]
        extra = [n for n in state if n not in names]
        if missing or extra:
            raise ValueError(
                f"parameter names do not match the model: missing {missing}, unexpected {extra}"
            )
        for pg in params:
            a = state[pg.name]
            if tuple(a.shape) != tuple(pg.param.shape):
                raise ValueError(
                    f"parameter {pg.name}: expected shape {tuple(pg.param.shape)}, got {tuple(a.shape)}"
                )
            if np.dtype(a.dtype) != np.dtype(pg.param.dtype):
                raise TypeError(
                    f"parameter {pg.name}: expected dtype {pg.param.dtype}, got {a.dtype}"
                )
        be = self.backend
        for pg in params:
            pg.param[...] = be.asarray(state[pg.name])
        self.zero_grad()

    def __repr__(self) -> str:
        lines = [f"  ({i}): {block!r}" for i, block in enumerate(self.blocks)]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _bindable_layers(blocks: SequenceType[Any]) -> list[Dense] | None:
    """The Dense layers with parameters in ``param_grads`` order (nested Sequentials opened); None if a
    block with parameters is neither. Nested Sequentials lose their own flat buffers."""
    layers: list[Dense] = []
    for block in blocks:
        if isinstance(block, Sequential):
            inner = _bindable_layers(block.blocks)
            if inner is None:
                return None
            block.flat = None
            layers += inner
        elif isinstance(block, Dense):
            layers.append(block)
        elif block.param_grads():
            return None
    return layers


def _positions(blocks: SequenceType[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``("<index>", block)`` for every block, nested ``Sequential`` blocks as ``"<index>.<index>"``."""
    for i, block in enumerate(blocks):
        where = f"{prefix}{i}"
        yield where, block
        if isinstance(block, Sequential):
            yield from _positions(block.blocks, f"{where}.")


def _check_distinct(blocks: SequenceType[Any]) -> None:
    """ValueError naming both positions where one block instance appears twice."""
    seen: dict[int, str] = {}
    for where, block in _positions(blocks):
        first = seen.setdefault(id(block), where)
        if first != where:
            name = type(block).__name__
            raise ValueError(
                f"block {where} is the same {name} instance as block {first}: a block keeps what its "
                f"backward needs from its own forward, so each position needs a separate instance "
                f"(e.g. {name}(...) at each; sharing parameters between positions is not supported)"
            )


def _check_sizes(sizes: Any) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise TypeError(f"sizes must be a sequence of ints like [64, 128, 10]; got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output size; got {sizes}")
    try:
        return [positive_int("every size", s) for s in sizes]
    except ValueError:
        raise ValueError(f"every size must be a positive int; got {sizes}") from None


class MLP(Sequential):
    """A multi-layer perceptron: ``act(x @ w + b)`` per hidden layer, then a plain ``x @ w + b``.

    The hidden layers are ``Dense(..., activation=...)`` (the bias and the
    activation in one pass after the product, and their gradients in one pass
    backward); the last layer has no activation.

    Args:
        sizes: ``[n_in, hidden_1, ..., n_out]``, at least two sizes.
        activation: ``"relu"`` (default), ``"gelu"`` or ``"tanh"``.
        bias: Whether the Dense layers have biases.
        dtype: ``"float16"``, ``"bfloat16"`` (needs ml_dtypes), ``"float32"``
            (default) or ``"float64"``.
        backend: ``"auto"``, ``"numpy"``, ``"cupy"`` or a Backend.
        rng: A ``numpy.random.Generator`` or a seed; the layers draw their
            initial parameters from it in order, on the host, so a seed gives
            the same network on every backend.

    Parameters are named ``"0.w"``, ``"0.b"``, ``"2.w"``, ``"2.b"``, ...:
    layer ``k`` (``model[k]``) is named ``2k``, its position in the same network
    written with separate activation blocks, ``Sequential(Dense, ReLU, Dense,
    ...)``, as PyTorch names ``nn.Sequential(Linear, ReLU, Linear)``'s
    parameters ``"0.weight"``, ``"2.weight"``. So the state dicts and
    checkpoints of the two forms are interchangeable.

    Example:
        >>> MLP([64, 128, 10], backend="numpy", rng=0).sizes
        [64, 128, 10]
    """

    def __init__(
        self,
        sizes: SequenceType[int],
        *,
        activation: str = "relu",
        bias: bool = True,
        dtype: Any = "float32",
        backend: str | Backend = "auto",
        rng: Any = None,
    ) -> None:
        self.sizes = _check_sizes(sizes)
        self.activation = check_activation(activation)
        check_bool("bias", bias)
        dt = float_dtype(dtype)
        be = get_backend(backend)
        gen = as_generator(rng)
        last = len(self.sizes) - 2
        blocks = [
            Dense(n_in, n_out, activation=None if k == last else self.activation, bias=bias, dtype=dt,
                  backend=be, rng=gen)
            for k, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))
        ]
        super().__init__(*blocks)
        self.bias = bias

    def _block_name(self, i: int) -> str:
        """Layer ``i`` is named ``2i``: its index among ``Dense, act, Dense, act, ..., Dense``."""
        return str(2 * i)

    def config(self) -> dict[str, Any]:
        """``{"sizes", "activation", "bias", "dtype"}``: what rebuilds this network's shape."""
        return {
            "sizes": list(self.sizes),
            "activation": self.activation,
            "bias": self.bias,
            "dtype": self.dtype.name,
        }

    def __repr__(self) -> str:
        return (
            f"MLP(sizes={self.sizes}, activation={self.activation!r}, bias={self.bias}, "
            f"dtype={self.dtype.name}, backend={self.backend.name!r})"
        )
