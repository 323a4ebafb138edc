"""``gpudense train``: for now, a demo of one forward and backward pass.

(The full training job, an MLP on real data, replaces this module.)
"""

from __future__ import annotations

import argparse

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", help="numpy, cupy or auto (default)")
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from gpudense import Dense

    rng = np.random.default_rng(args.seed)
    layer = Dense(64, 10, dtype=args.dtype, backend=args.backend, rng=rng)
    be = layer.backend
    x = be.asarray(rng.standard_normal((32, 64)), dtype=layer.dtype)
    y = layer(x)
    dy = be.asarray(rng.standard_normal(y.shape), dtype=layer.dtype)
    dx = layer.backward(dy)
    print(layer)
    print(f"forward:  x {tuple(x.shape)} -> y {tuple(y.shape)}, mean |y| = {float(abs(y).mean()):.4f}")
    print(
        f"backward: dx {tuple(dx.shape)}, dw {tuple(layer.dw.shape)}, db {tuple(layer.db.shape)}, "
        f"|dw| = {float(abs(layer.dw).max()):.4f}"
    )
    return 0
