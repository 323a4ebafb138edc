"""The optimizer base class: hyper-parameters, per-parameter step counts and state, checkpoint state.

Subclasses (:mod:`gpudense.optim.sgd`, :mod:`gpudense.optim.adam`) name
their state slots and write the update rule; everything else (walking the
model's parameters, float32 master weights for float16 parameters, the
state's validation and loading) is here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpudense._checks import check_finite, check_number, is_count, wide_dtype
from gpudense.backends import backend_of

__all__ = ["Optimizer", "PreparedState"]


class Optimizer:
    """Base class: holds the model, the hyper-parameters, step counts and per-parameter state.

    Subclasses name their state slots in ``SLOTS``, check their
    hyper-parameters in ``_check_hyperparams`` and implement ``_update``.

    As in PyTorch, every parameter has its own step count: the number of
    steps that found a gradient for it (Adam's bias correction uses it).
    float16 and bfloat16 parameters get a float32 master copy (state slot ``"master"``):
    the update is applied to the master and the model's float16 array is
    rewritten from it after each step, so updates smaller than float16's
    spacing accumulate instead of rounding away. Values written into a
    float16 parameter from outside the optimizer after its first step are
    overwritten by the master at the next step; load weights through a
    checkpoint (which restores both) or make a new optimizer.
    """

    #: Names of the per-parameter state arrays, e.g. ("m", "v") for Adam.
    SLOTS: tuple[str, ...] = ()
    #: Slots whose values are never negative (Adam's second moment "v"); a loaded state is checked.
    NON_NEGATIVE_SLOTS: tuple[str, ...] = ()
    #: The slot holding float32 master copies of float16 and bfloat16 parameters.
    MASTER = "master"

    def __init__(self, model: Any, **hyperparams: float) -> None:
        if not callable(getattr(model, "param_grads", None)):
            raise TypeError(
                f"an optimizer needs a model with param_grads(); got {type(model).__name__}"
            )
        _distinct(model.param_grads())
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
        """Update every parameter that has a gradient, in place.

        Every parameter is checked before any is updated, so a refused step
        changes nothing.

        Raises:
            ValueError: a gradient whose shape or dtype differs from its
                parameter's, a read-only parameter, or one array listed under
                two names (it would be stepped twice).
        """
        params = _distinct(self.model.param_grads())
        for name, p, g in params:
            if g is None:
                continue
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(
                    f"gradient of {name} has shape {tuple(g.shape)} and dtype {g.dtype}, "
                    f"parameter has {tuple(p.shape)} and {p.dtype}"
                )
            if not getattr(p.flags, "writeable", True):  # CuPy arrays have no such flag
                raise ValueError(
                    f"parameter {name} is read-only (flags.writeable is False); the optimizer updates "
                    "parameters in place: give the layer a writable array (e.g. layer.w = layer.w.copy())"
                )
        self.step_count += 1
        for name, p, g in params:
            if g is None:
                continue
            xp = backend_of(p, g).xp
            t = self.param_steps.get(name, 0) + 1
            self.param_steps[name] = t
            if wide_dtype(p.dtype) != p.dtype:  # float16, bfloat16: update the float32 master
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

        The same as ``self.load_prepared(self.check_state_dict(state))``: the
        optimizer changes only if the whole state is valid.

        Raises:
            ValueError: a mismatch (the message names it).
            TypeError: ``state`` is not such a dict, or a dtype differs.

        Example:
            >>> from gpudense.nn import MLP
            >>> from gpudense.optim import Adam
            >>> model = MLP([3, 2], backend="numpy", rng=0)
            >>> Adam(model).load_state_dict(Adam(model, lr=0.5).state_dict())
        """
        self.load_prepared(self.check_state_dict(state))

    def check_state_dict(self, state: Any) -> "PreparedState":
        """Validate ``state`` (as :meth:`state_dict` returns it) and copy it onto the model's backend.

        Nothing about the optimizer changes: call :meth:`load_prepared` with
        the result to install it, which cannot fail. Together they let a
        caller check several parts (a checkpoint: the model's weights, this
        state, a generator) before changing any of them.

        Checked: the optimizer type, the hyper-parameter names and ranges (as
        the constructor checks them), the step counts (each parameter's in
        ``[1, step]``), the slot names, the parameter names, shapes and dtypes
        (float32 for the state of float16 and bfloat16 parameters), that every slot
        holds exactly the parameters that have stepped (``"master"``: those
        of them that are float16 or bfloat16), that every value is finite, and that the
        slots in ``NON_NEGATIVE_SLOTS`` (Adam's ``v``) hold no negative value.

        Args:
            state: ``{"type", "hyperparams", "step", "param_steps", "slots"}``
                with host (NumPy) or device arrays.

        Returns:
            A :class:`PreparedState` for this optimizer, its arrays fresh
            copies on the model's backend.

        Raises:
            ValueError: a mismatch (the message names it).
            TypeError: ``state`` is not such a dict, or a dtype differs.

        Example:
            >>> from gpudense.nn import MLP
            >>> from gpudense.optim import Adam
            >>> model = MLP([3, 2], backend="numpy", rng=0)
            >>> opt = Adam(model)
            >>> prepared = opt.check_state_dict(Adam(model, lr=0.5).state_dict())
            >>> opt.lr, prepared.hyperparams["lr"]
            (0.001, 0.5)
            >>> opt.load_prepared(prepared); opt.lr
            0.5
        """
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
        for slot, arrays in arrays_on_backend.items():
            for name, a in arrays.items():
                check_finite(f"optimizer state {slot}/{name}", a, be.xp)
                if slot in self.NON_NEGATIVE_SLOTS and a.size and float(a.min()) < 0:
                    raise ValueError(
                        f"optimizer state {slot}/{name} holds a negative value ({float(a.min()):g}); "
                        f"{type(self).__name__} keeps squared gradients there, never below 0"
                    )
        return PreparedState(
            hyperparams=checked,
            step=int(step),
            param_steps={n: int(t) for n, t in param_steps.items()},
            slots=arrays_on_backend,
            optimizer=self,
        )

    def load_prepared(self, prepared: "PreparedState") -> None:
        """Install a state that :meth:`check_state_dict` of this optimizer returned; cannot fail.

        As in PyTorch, the state's hyper-parameters (learning rate, ...)
        replace the current ones and the step counts continue. The prepared
        arrays become the optimizer's state (they are not copied again):
        load a prepared state once.

        Raises:
            TypeError: ``prepared`` is not a :class:`PreparedState`.
            ValueError: it was checked by another optimizer. (Both are
                misuse, found before anything changes.)
        """
        if not isinstance(prepared, PreparedState):
            raise TypeError(
                f"load_prepared takes what check_state_dict returned; got {type(prepared).__name__}"
            )
        if prepared.optimizer is not self:
            raise ValueError("this state was checked by another optimizer; call this one's check_state_dict")
        self.hyperparams = dict(prepared.hyperparams)
        self.step_count = prepared.step
        self.param_steps = dict(prepared.param_steps)
        self.state = {slot: dict(arrays) for slot, arrays in prepared.slots.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True)
class PreparedState:
    """An optimizer state that :meth:`Optimizer.check_state_dict` validated, ready to load.

    Attributes:
        hyperparams: ``{name: float}``, checked as the constructor checks them.
        step: The optimizer's step count.
        param_steps: ``{parameter name: steps that updated it}``.
        slots: ``{slot: {parameter name: array}}``, fresh copies on the model's backend.
        optimizer: The optimizer that checked it, the only one that loads it.
    """

    hyperparams: dict[str, float]
    step: int
    param_steps: dict[str, int]
    slots: dict[str, dict[str, Any]]
    optimizer: Optimizer = field(repr=False, compare=False)


def _distinct(param_grads: Any) -> list[Any]:
    """``param_grads`` as a list, or a ValueError where one array is listed under two names."""
    listed = list(param_grads)
    seen: dict[int, str] = {}
    for name, p, _ in listed:
        first = seen.setdefault(id(p), name)
        if first != name:
            raise ValueError(
                f"parameters {first} and {name} are one array: an optimizer would step it twice; "
                "give each position its own layer"
            )
    return listed


def _model_backend(model: Any) -> Any:
    backend = getattr(model, "backend", None)
    if backend is not None:
        return backend
    params = [pg.param for pg in model.param_grads()]
    return backend_of(*params)
