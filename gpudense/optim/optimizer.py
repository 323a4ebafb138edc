"""The optimizer base class: hyper-parameters, per-parameter step counts and state, the step.

Subclasses (:mod:`gpudense.optim.sgd`, :mod:`gpudense.optim.adam`) name
their state slots, their scalars and the update of one chunk; everything
else (walking the model's parameters, the flat state buffers of
:mod:`gpudense.optim.flatstate`, float32 master weights for 16-bit
parameters, the threads of a CPU step) is here, once. The checkpoint state
(``state_dict``, its validation and loading) is
:mod:`gpudense.optim.checkpoint_state`.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gpudense._checks import check_bool, check_number, int_at_least
from gpudense.backends import backend_of
from gpudense.flat import CHUNK_BYTES
from gpudense.optim.checkpoint_state import CheckpointState, PreparedState
from gpudense.optim.flatstate import (
    FLUSH_PERIOD,
    Scratch,
    StateGroup,
    build_groups,
    run_chunks,
    signature,
)


class Optimizer(CheckpointState):
    """Base class: holds the model, the hyper-parameters, step counts and per-parameter state.

    Subclasses name their state slots in ``SLOTS`` and their update rule in
    ``RULE``, check their hyper-parameters in ``_check_hyperparams``, give
    the rule's scalars for a step in ``_scalars`` and write the update of
    one chunk in ``_chunk``.

    As in PyTorch, every parameter has its own step count: the number of
    steps that found a gradient for it (Adam's bias correction uses it).
    16-bit (float16 and bfloat16) parameters get a float32 master copy (state
    slot ``"master"``): the update is applied to the master and the model's
    16-bit array is
    rewritten from it after each step, so updates smaller than float16's
    spacing accumulate instead of rounding away. Values written into a
    16-bit parameter from outside the optimizer after its first step are
    overwritten by the master at the next step; load weights through a
    checkpoint (which restores both) or make a new optimizer.

    The state lives in flat buffers, one per slot and parameter dtype
    (:mod:`gpudense.optim.flatstate`): ``state[slot][name]`` is a view of
    its buffer. A step updates the parameters in place, one elementwise
    kernel per buffer on a GPU and cache-sized chunks of in-place NumPy
    operations on a CPU, and keeps subnormal numbers out of the state (see
    :mod:`gpudense.optim.flatstate`).
    """

    #: Names of the per-parameter state arrays, e.g. ("m", "v") for Adam.
    SLOTS: tuple[str, ...] = ()
    #: Slots whose values are never negative (Adam's second moment "v"); a loaded state is checked.
    NON_NEGATIVE_SLOTS: tuple[str, ...] = ()
    #: The slot holding float32 master copies of float16 and bfloat16 parameters.
    MASTER = "master"
    #: The update rule's name, as :meth:`gpudense.backends.Backend.optimizer_update` knows it.
    RULE = ""

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
        #: slot name -> {parameter name -> view of the slot's flat buffer}, for the parameters that have stepped
        self.state: dict[str, dict[str, Any]] = {slot: {} for slot in self.slot_names}
        self._groups: list[StateGroup] = []
        self._signature: tuple[Any, ...] | None = None
        self._scratch: dict[tuple[str, np.dtype, int], list[Scratch]] = {}
        self._threads = 1
        self._flush = True
        self._constants_key: Any = None
        self._constants_of: dict[str, Any] = {}
        self._params: list[Any] = []  # the parameter arrays of the last step
        self._pool: tuple[int, ThreadPoolExecutor] | None = None

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

        Every gradient is checked before anything changes: a refused step
        leaves the parameters, the state and the step counts as they were.

        Raises:
            ValueError: a gradient whose shape or dtype differs from its
                parameter's, a read-only parameter, or one array (or one
                name) listed twice by the model.
            TypeError: a gradient on another backend than its parameter.
        """
        pgs = self.model.param_grads()
        if len(pgs) != len(self._params) or any(pg.param is not p for pg, p in zip(pgs, self._params)):
            _distinct(pgs)  # new arrays: checked once, and the groups follow them
            self._groups_for(pgs)
            self._params = [pg.param for pg in pgs]
        groups = self._groups
        todo = [self._stepping(group, pgs) for group in groups]
        self.step_count += 1
        for group, items in zip(groups, todo):
            self._step_group(group, items)

    # -- flat state -------------------------------------------------------------
    def _groups_for(self, pgs: list[Any]) -> list[StateGroup]:
        """The state groups for the parameters ``pgs``; rebuilt (state carried over) when they change."""
        sig = signature(pgs)
        if sig != self._signature:
            names = [pg.name for pg in pgs]
            if len(set(names)) != len(names):
                twice = sorted({n for n in names if names.count(n) > 1})
                raise ValueError(f"the model's parameter names must be unique; {twice} appear more than once")
            old = self.state
            self._groups = build_groups(pgs, self.SLOTS, self.MASTER, backend_of)
            self._signature = sig
            flat = getattr(self.model, "flat", None)
            for group in self._groups:  # a group laid out as the model's flat buffers steps through them
                group.model_flat = flat if flat is not None and group.matches(flat) else None
            self.state = {slot: {} for slot in self.slot_names}
            where = {name: g for g in self._groups for name in g.names}
            for slot, arrays in old.items():  # carry the state of parameters that are still there
                for name, a in arrays.items():
                    group = where.get(name)
                    if group is None or slot not in group.buffers or tuple(a.shape) != group.view(slot, name).shape:
                        self.param_steps.pop(name, None)
                        continue
                    view = group.view(slot, name)
                    view[...] = group.backend.asarray(a)
                    self.state[slot][name] = view
            for slot in self.state:  # a parameter keeps all of its state or none
                for name in [n for n in self.state[slot] if n not in self.param_steps]:
                    del self.state[slot][name]
        return self._groups

    def _stepping(self, group: StateGroup, pgs: list[Any]) -> list[tuple[int, str, Any, Any]]:
        """``(position in the group, name, param, grad)`` of the group's parameters that have a gradient, checked."""
        items = []
        for i, k in enumerate(group.positions):
            name, p, g = pgs[k]
            if g is None:
                continue
            if type(g) is not type(p):
                backend_of(p, g)  # raises on a NumPy/CuPy mix
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
            items.append((i, name, p, g))
        return items

    def _step_group(self, group: StateGroup, items: list[tuple[int, str, Any, Any]]) -> None:
        backend = group.backend
        runs: list[list[Any]] = []  # [first position, last position, t], consecutive with one step count
        for i, name, p, g in items:
            t = self.param_steps.get(name, 0) + 1
            self.param_steps[name] = t
            if t == 1:  # the parameter's first step: its state starts here (zeros, master = p)
                for slot in group.slices[i]:
                    self.state[slot][name] = group.view(slot, name)
                if group.master:
                    self.state[self.MASTER][name][...] = p
            if runs and runs[-1][1] == i - 1 and runs[-1][2] == t:
                runs[-1][1] = i
            else:
                runs.append([i, i, t])
        flat = group.model_flat
        if flat is not None and all(p is flat.param_views[i] and g is flat.grad_views[i] for i, _, p, g in items):
            # the model's parameters and gradients are views of its flat buffers, laid out as the
            # state: one update per run of consecutive parameters, over the buffers' spans
            for first, last, t in runs:
                start, stop = group.layout.span(first, last)
                state = [group.buffers[slot][start:stop] for slot in self.SLOTS]
                p_flat, g_flat = flat.params[start:stop], flat.grads[start:stop]
                if group.master:
                    self._apply(backend, group.buffers[self.MASTER][start:stop], g_flat, state, t, p_flat)
                else:
                    self._apply(backend, p_flat, g_flat, state, t, None)
            return
        for i, name, p, g in items:
            t = self.param_steps[name]
            part = group.slices[i]
            work = p if p.flags.c_contiguous else backend.xp.ascontiguousarray(p)
            flat_p, flat_g = work.reshape(-1), g.reshape(-1)
            state = [part[slot] for slot in self.SLOTS]
            if group.master:
                self._apply(backend, part[self.MASTER], flat_g, state, t, flat_p)
            else:
                self._apply(backend, flat_p, flat_g, state, t, None)
            if work is not p:
                p[...] = work

    def _apply(self, backend: Any, w: Any, g: Any, state: list[Any], t: int, p_low: Any) -> None:
        """Update 1-D ``w`` (a parameter or its master) and its ``state`` from ``g``; rewrite ``p_low`` from ``w``."""
        scalars = self._scalars(t, np.dtype(w.dtype))
        if backend.optimizer_update(self.RULE, w=w, g=g, state=dict(zip(self.SLOTS, state)),
                                    p_low=p_low, scalars=scalars):
            return
        xp = backend.xp
        threads = self.threads if backend.name == "numpy" else 1
        key = (xp.__name__, np.dtype(w.dtype), threads)
        scratches = self._scratch.get(key)
        if scratches is None:
            n = CHUNK_BYTES // key[1].itemsize
            scratches = self._scratch[key] = [Scratch(xp, key[1], n) for _ in range(threads)]
        pool = None
        if threads > 1:
            if self._pool is None or self._pool[0] != threads:
                self._pool = (threads, ThreadPoolExecutor(threads - 1, thread_name_prefix="gpudense-optim"))
            pool = self._pool[1]
        run_chunks(xp, scratches, functools.partial(self._chunk, xp, scalars), w, g, state, p_low, pool)

    @property
    def flush_subnormals(self) -> bool:
        """Whether steps set subnormal state (and, periodically, parameters) to zero: True unless set.

        See :mod:`gpudense.optim.flatstate`. On a CPU whose arithmetic on
        subnormal numbers is as fast as on normal ones (AMD's Zen cores, for
        instance) the flush is pure cost, three operations per chunk of the
        first moment: ``bench/subnormal_check.py`` measures both on a given
        machine. Without it the results differ only below the dtype's
        smallest normal number.
        """
        return self._flush

    @flush_subnormals.setter
    def flush_subnormals(self, value: bool) -> None:
        self._flush = check_bool("flush_subnormals", value)

    @property
    def threads(self) -> int:
        """CPU threads a step of the NumPy backend runs on: 1 unless set (settable; >= 1).

        A step splits its chunks among the threads where there are at least
        two per thread (NumPy releases the GIL inside each operation). More
        threads pay off only where cores are idle during the step. OpenBLAS's
        idle worker threads spin for ``2**OPENBLAS_THREAD_TIMEOUT`` cycles
        after each product before they sleep; with OpenBLAS's default (about
        0.1 s) they occupy, right after a backward pass on more than one BLAS
        thread, the cores the optimizer's threads would use, and a second
        thread gains nothing. ``import gpudense`` shortens that spin when it
        can (:mod:`gpudense._blas`), and :func:`gpudense._blas.step_threads`
        gives the count that pays (``gpudense train`` uses it).
        """
        return self._threads

    @threads.setter
    def threads(self, value: int) -> None:
        self._threads = int_at_least("threads", value, 1)

    def _scalars(self, t: int, dtype: np.dtype) -> dict[str, Any]:
        """The update's scalars for a parameter at its step ``t``, as ``dtype`` numbers (and int flags).

        :meth:`_constants` (kept while the hyper-parameters stay), then
        :meth:`_per_step`, then ``tiny`` (the dtype's smallest normal number)
        and ``flush_all`` (whether this step also flushes the slow state and
        the parameter, every :data:`~gpudense.optim.flatstate.FLUSH_PERIOD`).
        """
        key = (dtype, tuple(self.hyperparams.items()), self._flush)
        if self._constants_key != key:
            tiny = dtype.type(np.finfo(dtype).tiny if self._flush else 0)  # 0: nothing is below it
            self._constants_of = {**self._constants(dtype), "tiny": tiny}
            self._constants_key = key
        flush_all = int(self._flush and t % FLUSH_PERIOD == 0)
        return {**self._constants_of, **self._per_step(t, dtype), "flush_all": flush_all}

    def _constants(self, dtype: np.dtype) -> dict[str, Any]:
        """The rule's scalars that do not depend on the step count, as ``dtype`` numbers (and int flags)."""
        raise NotImplementedError

    def _per_step(self, t: int, dtype: np.dtype) -> dict[str, Any]:
        """The rule's scalars at a parameter's step ``t`` (bias corrections, first-step flags)."""
        raise NotImplementedError

    def _chunk(self, xp: Any, s: dict[str, Any], w: Any, g: Any, state: list[Any],
               ta: Any, tb: Any, mask: Any) -> None:
        """The update of one chunk, in place on ``w`` and ``state``; ``ta``, ``tb``, ``mask``: temporaries."""
        raise NotImplementedError

    def _install_state(self, slots: dict[str, dict[str, Any]]) -> None:
        """Copy ``slots`` into fresh flat buffers laid out for the model's parameters; the rest is zero."""
        self.state = {slot: {} for slot in self.slot_names}
        self._signature = None
        self._params = []
        groups = self._groups_for(self.model.param_grads())
        where = {name: g for g in groups for name in g.names}
        for group in groups:
            group.clear()
        for slot, arrays in slots.items():
            for name, a in arrays.items():
                view = where[name].view(slot, name)
                view[...] = a
                self.state[slot][name] = view

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return f"{type(self).__name__}({args})"


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
