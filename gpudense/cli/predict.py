"""``gpudense predict CHECKPOINT --data PATH --out preds.npy [--proba]``: a trained model's predictions, saved.

Class ids (int64, one per sample) or, with ``--proba``, softmax
probabilities (float32; float64 for a float64 model), computed a batch at a
time on ``--backend`` (:func:`gpudense.inference.predict`) and written as
one ``.npy`` atomically: a failed run leaves the file that was there.
``--data`` may hold labels or not: ``data.npz`` with ``x``, a single
``x.npy``, ``X.npy,Y.npy`` or a directory with ``x.npy``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from gpudense.backends import BACKEND_NAMES
from gpudense.cli._common import check_distinct_paths, check_output_path, int_at_least, path_value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``gpudense predict``'s arguments on ``parser``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=path_value,
                        help="a checkpoint written by gpudense train --save")
    parser.add_argument("--data", metavar="PATH", required=True, type=path_value,
                        help="features: data.npz (array x), x.npy, X.npy,Y.npy or a directory with x.npy")
    parser.add_argument("--out", metavar="PATH", required=True, type=path_value,
                        help="the .npy file to write the predictions to")
    parser.add_argument("--proba", action="store_true", help="write class probabilities (n, classes), not class ids")
    parser.add_argument("--backend", choices=list(BACKEND_NAMES), default="auto",
                        help="auto (default), numpy or cupy")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8192, metavar="N",
                        help="samples per forward pass (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """The ``gpudense predict`` subcommand; errors propagate to :func:`gpudense.cli.main` (one line each)."""
    from gpudense._files import FileRefused, atomic_write, regular_target
    from gpudense.datasets import check_finite_rows, load_arrays
    from gpudense.inference import load_model, predict

    check_output_path("--out", args.out, suffix=".npy")
    for part in args.data.split(","):  # the predictions never replace the data they are made from
        inputs = [part, *(os.path.join(part, n) for n in ("x.npy", "y.npy"))] if os.path.isdir(part) else [part]
        for path in inputs:
            check_distinct_paths({"--out": args.out, "--data": path, "CHECKPOINT": args.checkpoint}, outputs=["--out"])
    try:
        target = regular_target(args.out, "--out")
    except FileRefused as exc:
        raise ValueError(str(exc)) from None
    model = load_model(args.checkpoint, backend=args.backend)
    x, _ = load_arrays(args.data, labels=False, what="--data")
    check_finite_rows(x, model.dtype, f"--data {args.data}")
    preds = predict(model, x, proba=args.proba, batch_size=args.batch_size, what=f"--data {args.data}")
    atomic_write(Path(target), lambda f: np.save(f, preds, allow_pickle=False), "predictions")
    what = f"probabilities of {preds.shape[1]} classes" if args.proba else "class ids"
    print(f"predictions: {args.out} ({preds.shape[0]} samples, {what})")
    return 0
