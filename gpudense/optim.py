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

import math
from typing import Any

import numpy as np

from gpudense._checks import check_number, is_count, wide_dtype
from gpudense.backends import backend_of

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Optimizer", "make_optimizer"]


class Optimizer:
    """Base class: holds the model, the hyper-parameters, step counts and per-parameter state.

    Subclasses name their state slots in ``SLOTS``, check their
    hyper-parameters in ``_check_hyperparams`` and implement ``_update``.

    As in PyTorch, every parameter has its own step count: the number of
    steps that found a gradient for it (Adam's bias correction uses it).
    float16 parameters get a float32 master copy (state slot ``"master"``):
    the update is applied to the master and the model's float16 array is
    rewritten from it after each step, so updates smaller than float16's
    spacing accumulate instead of rounding away. Values written into a
    float16 parameter from outside the optimizer after its first step are
    overwritten by the master at the next step; load weights through a
    checkpoint (which restores both) or make a new optimizer.
    """

    #: Names of the per-parameter state arrays, e.g. ("m", "v") for Adam.
    SLOTS: tuple[str, ...] = ()
    #: The slot holding float32 master copies of float16 parameters.
    MASTER = "master"

    def __init__(self, model: Any, **hyperparams: float) -> None:
        if not callable(getattr(model, "param_grads", None)):
            raise TypeError(
                f"an optimizer needs a model with param_grads(); got {type(model).__name__}"
            )
        self.model = model
        self.hyperparams: dict[str, float] = self._check_hyperparams(dict(hyperparams))
        #: Calls of :meth:`step`.
        self.step_count = 0
        #: parameter name -> steps that updated it (absent: never updated)
        self.param_steps: dict[str, int] = {}
        #: slot name -> {parameter name -> array on the model's backend}
        self.state: dict[str, dict[str, Any]] = {slot: {} for slot in self.slot_names}

    @property
    def slot_names(self) -> tuple[str, ...]:
        """The state slots: ``SLOTS`` and ``"master"``."""
        return (*self.SLOTS, self.MASTER)

    def _check_hyperparams(self, hyper: dict[str, Any]) -> dict[str, float]:
        """``hyper`` checked as the constructor checks it (ranges, types); raises ValueError/TypeError."""
        raise NotImplementedError

    @property
    def lr(self) -> float:
        """The learning rate (assignable, e.g. for a schedule)."""
        return self.hyperparams["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyperparams["lr"] = check_number("lr", value, low_open=True)

    def zero_grad(self) -> None:
        """Forget the model's gradients (``model.zero_grad()``)."""
        self.model.zero_grad()

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        self.step_count += 1
        for name, p, g in self.model.param_grads():
            if g is None:
                continue
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(
                    f"gradient of {name} has shape {tuple(g.shape)} and dtype {g.dtype}, "
                    f"parameter has {tuple(p.shape)} and {p.dtype}"
                )
            xp = backend_of(p, g).xp
            t = self.param_steps.get(name, 0) + 1
            self.param_steps[name] = t
            if wide_dtype(p.dtype) != p.dtype:  # float16: update the float32 master
                w = self.state[self.MASTER].get(name)
                if w is None:
                    w = self.state[self.MASTER][name] = p.astype(wide_dtype(p.dtype))
                self._update(xp, name, w, g.astype(w.dtype), t)
                p[...] = w  # rounded once
            else:
                self._update(xp, name, p, g, t)

    def _update(self, xp: Any, name: str, p: Any, g: Any, t: int) -> None:
        """Update ``p`` (the parameter, or its float32 master) in place; ``t``: its step count, from 1."""
        raise NotImplementedError

    def _slot(self, xp: Any, slot: str, name: str, p: Any) -> Any:
        """State array ``slot`` of parameter ``name``, zeros of ``p``'s shape and dtype on first use."""
        arrays = self.state[slot]
        a = arrays.get(name)
        if a is None:
            a = arrays[name] = xp.zeros(p.shape, dtype=p.dtype)
        return a

    # -- checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint.

        Returns:
            ``{"type": class name, "hyperparams": {name: float}, "step": int,
            "param_steps": {param name: int}, "slots": {slot: {param name:
            numpy array}}}``; ``slots`` has ``SLOTS`` and ``"master"``, each
            holding exactly the parameters that have stepped (``"master"``:
            those of them that are float16). Arrays are host copies, so the
            dict is portable between backends.
        """
        be = _model_backend(self.model)
        return {
            "type": type(self).__name__,
            "hyperparams": dict(self.hyperparams),
            "step": int(self.step_count),
            "param_steps": dict(self.param_steps),
            "slots": {
                slot: {name: np.array(be.to_numpy(a), copy=True) for name, a in arrays.items()}
                for slot, arrays in self.state.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, validated against the model.

        The optimizer type, hyper-parameter names and ranges (as the
        constructor checks them), step counts, slot names, parameter names,
        shapes and dtypes must match, and every slot must hold every
        parameter that has stepped and no other; nothing changes unless all
        do. As in PyTorch, the state's hyper-parameters (learning rate, ...)
        replace the current ones and the step counts continue. Arrays are
        copied onto the model's backend.

        Raises:
            ValueError: a mismatch (the message names it).
            TypeError: ``state`` is not such a dict, or a dtype differs.
        """
        self._assign(self._prepare(state))

    def _prepare(self, state: Any) -> tuple[dict[str, float], int, dict[str, int], dict[str, dict[str, Any]]]:
        """Validate ``state`` and copy its arrays onto the model's backend; changes nothing."""
        if not isinstance(state, dict):
            raise TypeError(f"optimizer state must be a dict; got {type(state).__name__}")
        for key in ("type", "hyperparams", "step", "param_steps", "slots"):
            if key not in state:
                raise ValueError(f"optimizer state has no {key!r} entry")
        if state["type"] != type(self).__name__:
            raise ValueError(f"optimizer state is for {state['type']}, this optimizer is {type(self).__name__}")
        if not isinstance(state["hyperparams"], dict):
            raise TypeError(f"optimizer hyperparams must be a dict; got {type(state['hyperparams']).__name__}")
        hyper = dict(state["hyperparams"])
        if set(hyper) != set(self.hyperparams):
            raise ValueError(
                f"{type(self).__name__} hyper-parameters {sorted(self.hyperparams)} do not match the "
                f"state's {sorted(hyper)}"
            )
        checked = self._check_hyperparams(hyper)
        step = state["step"]
        if not is_count(step):
            raise ValueError(f"optimizer step must be a non-negative int; got {step!r}")
        params = {pg.name: pg.param for pg in self.model.param_grads()}
        param_steps = state["param_steps"]
        if not isinstance(param_steps, dict):
            raise TypeError(f"optimizer param_steps must be a dict; got {type(param_steps).__name__}")
        for name, t in param_steps.items():
            if name not in params:
                raise ValueError(f"optimizer param_steps: the model has no parameter {name!r}")
            if not is_count(t) or not 1 <= t <= step:
                raise ValueError(f"optimizer param_steps[{name!r}] must be an int in [1, step={step}]; got {t!r}")
        slots = state["slots"]
        if not isinstance(slots, dict) or set(slots) != set(self.slot_names):
            got = sorted(slots) if isinstance(slots, dict) else type(slots).__name__
            raise ValueError(f"{type(self).__name__} keeps slots {list(self.slot_names)}; the state has {got}")
        stepped = set(param_steps)
        for slot, arrays in slots.items():
            if not isinstance(arrays, dict):
                raise TypeError(f"optimizer state {slot} must be a dict; got {type(arrays).__name__}")
            for name in arrays:
                if name not in params:
                    raise ValueError(f"optimizer state {slot}/{name}: the model has no parameter {name!r}")
            if slot == self.MASTER:
                want_names = {n for n in stepped if wide_dtype(params[n].dtype) != params[n].dtype}
            else:
                want_names = stepped
            missing = sorted(want_names - set(arrays))
            unexpected = sorted(set(arrays) - want_names)
            if missing or unexpected:
                raise ValueError(
                    f"optimizer state {slot}: holds {sorted(arrays)}; the parameters that have stepped "
                    f"need {sorted(want_names)} (missing {missing}, unexpected {unexpected})"
                )
            for name, a in arrays.items():
                p = params[name]
                if tuple(a.shape) != tuple(p.shape):
                    raise ValueError(
                        f"optimizer state {slot}/{name}: expected shape {tuple(p.shape)}, got {tuple(a.shape)}"
                    )
                want = wide_dtype(p.dtype)
                if np.dtype(a.dtype) != want:
                    raise TypeError(f"optimizer state {slot}/{name}: expected dtype {want}, got {a.dtype}")
        be = _model_backend(self.model)
        arrays_on_backend = {
            slot: {name: be.asarray(a).copy() for name, a in slots[slot].items()} for slot in self.slot_names
        }
        return checked, int(step), {n: int(t) for n, t in param_steps.items()}, arrays_on_backend

    def _assign(self, prepared: tuple[dict[str, float], int, dict[str, int], dict[str, dict[str, Any]]]) -> None:
        """Install what :meth:`_prepare` returned (cannot fail)."""
        self.hyperparams, self.step_count, self.param_steps, self.state = prepared

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return f"{type(self).__name__}({args})"


def _model_backend(model: Any) -> Any:
    backend = getattr(model, "backend", None)
    if backend is not None:
        return backend
    params = [pg.param for pg in model.param_grads()]
    return backend_of(*params)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and weight decay (PyTorch's ``SGD``).

    ``g = grad + weight_decay * p``; with momentum, ``buf = momentum * buf + g``
    (``buf = g`` on the first step) and ``g = buf`` (Nesterov:
    ``g = g + momentum * buf``); then ``p -= lr * g``.

    Args:
        model: Anything with ``param_grads()``.
        lr: Learning rate, > 0.
        momentum: In [0, 1); 0 (default) keeps no state.
        weight_decay: L2 penalty added to the gradient, >= 0.
        nesterov: Nesterov momentum (needs momentum > 0).
    """

    def __init__(self, model: Any, *, lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False; got {nesterov!r}")
        self.SLOTS = ("momentum",) if check_number("momentum", momentum, high=1.0, high_open=True) else ()
        super().__init__(model, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=float(nesterov))

    def _check_hyperparams(self, hyper: dict[str, Any]) -> dict[str, float]:
        h = {
            "lr": check_number("lr", hyper["lr"], low_open=True),
            "momentum": check_number("momentum", hyper["momentum"], high=1.0, high_open=True),
            "weight_decay": check_number("weight_decay", hyper["weight_decay"]),
            "nesterov": check_number("nesterov", hyper["nesterov"], high=1.0),
        }
        if h["nesterov"] not in (0.0, 1.0):
            raise ValueError(f"nesterov must be 0 or 1; got {hyper['nesterov']!r}")
        if h["nesterov"] and h["momentum"] == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if bool(h["momentum"]) != bool(self.SLOTS):
            raise ValueError(
                f"momentum={h['momentum']} does not fit this SGD, made with momentum "
                f"{'> 0' if self.SLOTS else '= 0'} (make the SGD with the momentum to load)"
            )
        return h

    def _update(self, xp: Any, name: str, p: Any, g: Any, t: int) -> None:
        h = self.hyperparams
        lr, mu, wd = h["lr"], h["momentum"], h["weight_decay"]
        wide = p.dtype  # float32 master for float16 parameters
        own = False  # whether d is a temporary of ours, free to scale in place
        d = g
        if wd:
            d = xp.multiply(p, wd, out=xp.empty(p.shape, dtype=wide))
            d += g
            own = True
        if mu:
            buf = self.state["momentum"].get(name)
            if buf is None:
                buf = self.state["momentum"][name] = d.astype(wide, copy=True)
            else:
                buf *= mu
                buf += d
            if h["nesterov"]:
                nd = buf * mu
                nd += d
                d, own = nd, True
            else:
                d, own = buf, False
        if own:
            d *= lr
            p -= d
        else:
            p -= lr * d


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's ``Adam``; ``weight_decay`` is the L2 form added to the gradient.

    With ``g = grad + weight_decay * p`` and step ``t``:
    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g**2``,
    ``p -= lr * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + eps)``.

    Args:
        model: Anything with ``param_grads()``.
        lr: Learning rate, > 0.
        betas: ``(b1, b2)``, each in [0, 1).
        eps: Added to the denominator, > 0.
        weight_decay: L2 penalty, >= 0.
    """

    SLOTS = ("m", "v")
    decoupled = False

    def __init__(self, model: Any, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (b1, b2); got {betas!r}")
        super().__init__(model, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)

    def _check_hyperparams(self, hyper: dict[str, Any]) -> dict[str, float]:
        return {
            "lr": check_number("lr", hyper["lr"], low_open=True),
            "beta1": check_number("betas[0]", hyper["beta1"], high=1.0, high_open=True),
            "beta2": check_number("betas[1]", hyper["beta2"], high=1.0, high_open=True),
            "eps": check_number("eps", hyper["eps"], low_open=True),
            "weight_decay": check_number("weight_decay", hyper["weight_decay"]),
        }

    def _update(self, xp: Any, name: str, p: Any, g: Any, t: int) -> None:
        h = self.hyperparams
        b1, b2, lr, wd = h["beta1"], h["beta2"], h["lr"], h["weight_decay"]
        m = self._slot(xp, "m", name, p)
        v = self._slot(xp, "v", name, p)
        if self.decoupled and wd:
            p *= 1 - lr * wd  # AdamW: decay the weights, not the gradient
        tmp = xp.empty(p.shape, dtype=m.dtype)  # the one temporary

        def grad_into_tmp() -> None:
            if wd and not self.decoupled:
                xp.multiply(p, wd, out=tmp)  # Adam's L2 term
                xp.add(tmp, g, out=tmp)
            else:
                tmp[...] = g

        grad_into_tmp()
        tmp *= 1 - b1
        m *= b1
        m += tmp
        grad_into_tmp()
        tmp *= tmp
        tmp *= 1 - b2
        v *= b2
        v += tmp
        bc1 = 1 - b1**t
        bc2 = 1 - b2**t
        # denom = sqrt(v / bc2) + eps; step = (lr / bc1) * m / denom
        xp.sqrt(v, out=tmp)
        tmp *= 1 / math.sqrt(bc2)
        tmp += h["eps"]
        xp.divide(m, tmp, out=tmp)
        tmp *= lr / bc1
        p -= tmp


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter), PyTorch's ``AdamW``: Adam with decoupled weight decay.

    Each step first shrinks ``p *= 1 - lr * weight_decay``, then takes Adam's
    step on the plain gradient. Default ``weight_decay=0.01`` as PyTorch.
    """

    decoupled = True

    def __init__(self, model: Any, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


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
