"""An optimizer's checkpoint state: ``state_dict``, and its validation and loading in two halves.

:class:`CheckpointState` is the part of :class:`~gpudense.optim.Optimizer`
that turns the optimizer into plain data for a checkpoint and back, checking
everything before changing anything (:meth:`~CheckpointState.check_state_dict`
then :meth:`~CheckpointState.load_prepared`); :class:`PreparedState` is what
the first half hands to the second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpudense._checks import check_finite, is_count, wide_dtype
from gpudense.backends import backend_of


class CheckpointState:
    """The checkpoint half of an optimizer (mixed into :class:`~gpudense.optim.Optimizer`).

    It reads the optimizer's ``hyperparams``, ``step_count``, ``param_steps``,
    ``state``, ``SLOTS``, ``MASTER``, ``NON_NEGATIVE_SLOTS``, ``model`` and
    ``_check_hyperparams``; the optimizer's ``_install_state`` puts a loaded
    state into its flat buffers.
    """

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
        arrays are copied into the optimizer's flat state buffers; the state
        of parameters that have not stepped is zero.

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
        self._install_state(prepared.slots)

    def _install_state(self, slots: dict[str, dict[str, Any]]) -> None:
        """Make ``slots`` (checked arrays on the model's backend) the optimizer's state; cannot fail."""
        raise NotImplementedError


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
    optimizer: Any = field(repr=False, compare=False)


def _model_backend(model: Any) -> Any:
    backend = getattr(model, "backend", None)
    if backend is not None:
        return backend
    params = [pg.param for pg in model.param_grads()]
    return backend_of(*params)
