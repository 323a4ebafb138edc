"""Optimizer steps as one CuPy ``ElementwiseKernel`` per flat buffer.

Each rule of :mod:`gpudense.optim` (Adam/AdamW, SGD with and without
momentum; each with and without a 16-bit parameter rewritten from a float32
master) is one kernel that reads the gradient and the state once and writes
the parameter and the state once. The arithmetic is the same sequence of
correctly rounded operations as the CPU path (each product, sum, quotient and
square root rounded on its own, never fused into an FMA, subnormal numbers
kept: see ``kernels/optim_update.cuh``, :func:`preamble`), so a GPU step gives the CPU step's bits. The
subnormal flush is the CPU path's too: an entry below ``tiny`` is multiplied
by zero, which keeps its sign.

This module only describes the kernels (:data:`SPECS`, pure text, and the
preamble in ``kernels/optim_update.cuh``): it imports no CuPy. :class:`OptimizerKernels` builds them with the CuPy module it is
given, once per process, on first use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpudense.backends.cuda.loader import kernel_source

#: The kernel file whose text is every optimizer kernel's preamble: correctly rounded
#: float and double arithmetic, never contracted into FMAs, subnormal numbers kept.
PREAMBLE_FILE = "optim_update.cuh"


@functools.lru_cache(maxsize=1)
def preamble() -> str:
    """The optimizer kernels' preamble: the text of ``kernels/optim_update.cuh``, read once.

    Raises:
        KernelBuildError: the file is missing.

    Example:
        >>> "mul_rn" in preamble()
        True
    """
    return kernel_source(PREAMBLE_FILE)[0]


@dataclass(frozen=True)
class KernelSpec:
    """One ``ElementwiseKernel``: its parameters, body and name.

    ``in_params`` are the gradient ``G g`` and the rule's scalars (named as
    the optimizer's ``_scalars`` names them); ``out_params`` are the arrays
    updated in place (``T w`` and the state), plus ``P p_low`` for the
    16-bit parameter. ``T`` is the state dtype.
    """

    name: str
    in_params: str
    out_params: str
    operation: str

    def scalar_names(self) -> list[str]:
        """The scalar inputs, in order (every in-param but ``g``)."""
        return [p.split()[1] for p in self.in_params.split(",")][1:]

    def array_names(self) -> list[str]:
        """The in-place arrays, in order."""
        return [p.split()[1] for p in self.out_params.split(",")]


_ADAM_IN = ("G g, T b1, T omb1, T b2, T omb2, int32 l2, T wd, int32 decoupled, T decay, T c2, T eps, "
            "T k, T tiny, int32 flush_all")
_ADAM_BODY = r"""
T w_ = w;
if (decoupled) w_ = mul_rn(w_, decay);
T gw = (T)g;
if (l2) gw = add_rn(mul_rn(w_, wd), gw);
T m_ = add_rn(mul_rn(m, b1), mul_rn(gw, omb1));
if (abs_of(m_) < tiny) m_ = mul_rn(m_, (T)0);
T v_ = add_rn(mul_rn(v, b2), mul_rn(mul_rn(gw, gw), omb2));
T d = add_rn(mul_rn(sqrt_rn(v_), c2), eps);
w_ = sub_rn(w_, mul_rn(div_rn(m_, d), k));
if (flush_all) {
    if (v_ < tiny) v_ = mul_rn(v_, (T)0);
    if (abs_of(w_) < tiny) w_ = mul_rn(w_, (T)0);
}
m = m_;
v = v_;
w = w_;
"""
_SGD_IN = "G g, T lr, T mu, T wd, int32 l2, int32 nesterov, int32 first, T tiny, int32 flush_all"
_SGD_MOMENTUM_BODY = r"""
T w_ = w;
T d = (T)g;
if (l2) d = add_rn(mul_rn(w_, wd), d);
T b_ = first ? d : add_rn(mul_rn(momentum, mu), d);
if (abs_of(b_) < tiny) b_ = mul_rn(b_, (T)0);
T e = nesterov ? add_rn(mul_rn(b_, mu), d) : b_;
w_ = sub_rn(w_, mul_rn(e, lr));
if (flush_all && abs_of(w_) < tiny) w_ = mul_rn(w_, (T)0);
momentum = b_;
w = w_;
"""
_SGD_BODY = r"""
T w_ = w;
T d = (T)g;
if (l2) d = add_rn(mul_rn(w_, wd), d);
w_ = sub_rn(w_, mul_rn(d, lr));
if (flush_all && abs_of(w_) < tiny) w_ = mul_rn(w_, (T)0);
w = w_;
"""
_LOW = "\np_low = (P)w_;\n"


def _specs() -> dict[tuple[str, tuple[str, ...], bool], KernelSpec]:
    out = {}
    for rule, slots, ins, body in (("adam", ("m", "v"), _ADAM_IN, _ADAM_BODY),
                                   ("sgd", ("momentum",), _SGD_IN, _SGD_MOMENTUM_BODY),
                                   ("sgd", (), _SGD_IN, _SGD_BODY)):
        for master in (False, True):
            outs = ", ".join(["T w"] + [f"T {s}" for s in slots] + (["P p_low"] if master else []))
            name = f"gpudense_{rule}{'_' + '_'.join(slots) if rule == 'sgd' and slots else ''}" \
                   f"{'_master' if master else ''}"
            out[(rule, slots, master)] = KernelSpec(name, ins, outs, body + (_LOW if master else ""))
    return out


#: ``(rule, state slots, master) -> KernelSpec``.
SPECS: dict[tuple[str, tuple[str, ...], bool], KernelSpec] = _specs()

#: The state dtypes the kernels take (16-bit parameters keep float32 state).
_WIDE = (np.dtype(np.float32), np.dtype(np.float64))
_LOW_DTYPES = (np.dtype(np.float16),)


def spec_key(rule: str, state: dict[str, Any], master: bool) -> tuple[str, tuple[str, ...], bool]:
    """The :data:`SPECS` key of a step of ``rule`` with ``state``'s slots."""
    return rule, tuple(state), master


class OptimizerKernels:
    """The optimizer kernels of :data:`SPECS`, built with ``cupy`` on first use and kept."""

    def __init__(self, cupy: Any) -> None:
        self.cp = cupy
        self._built: dict[tuple[str, tuple[str, ...], bool], Any] = {}

    def update(self, rule: str, *, w: Any, g: Any, state: dict[str, Any], p_low: Any,
               scalars: dict[str, Any]) -> bool:
        """Run the kernel for ``rule``; False where no kernel fits (another dtype, unknown rule)."""
        key = spec_key(rule, state, p_low is not None)
        spec = SPECS.get(key)
        if spec is None or np.dtype(w.dtype) not in _WIDE:
            return False
        if p_low is not None and np.dtype(p_low.dtype) not in _LOW_DTYPES:
            return False
        kernel = self._built.get(key)
        if kernel is None:
            kernel = self._built[key] = self.cp.ElementwiseKernel(
                spec.in_params, spec.out_params, spec.operation, spec.name, preamble=preamble())
        arrays = {"w": w, "p_low": p_low, **state}
        kernel(g, *(scalars[n] for n in spec.scalar_names()), *(arrays[n] for n in spec.array_names()))
        return True
