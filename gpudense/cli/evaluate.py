"""``gpudense evaluate CHECKPOINT --data PATH [--json]``: a trained model's loss, accuracy and per-class counts.

The model is rebuilt from the checkpoint (:func:`gpudense.inference.load_model`)
on ``--backend``, and scored (:func:`gpudense.inference.score`) on the data
a batch at a time; ``.npy`` features stay memory-mapped. ``--json`` prints
one JSON object instead of the table.
"""

from __future__ import annotations

import argparse
import json
import sys

from gpudense.backends import BACKEND_NAMES
from gpudense.cli._common import int_at_least, path_value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``gpudense evaluate``'s arguments on ``parser``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=path_value,
                        help="a checkpoint written by gpudense train --save")
    parser.add_argument("--data", metavar="PATH", required=True, type=path_value,
                        help="data.npz (arrays x, y), X.npy,Y.npy or a directory with x.npy and y.npy")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: samples, loss, accuracy, per-class count/correct/predicted")
    parser.add_argument("--backend", choices=list(BACKEND_NAMES), default="auto",
                        help="auto (default), numpy or cupy")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8192, metavar="N",
                        help="samples per forward pass (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """The ``gpudense evaluate`` subcommand; errors propagate to :func:`gpudense.cli.main` (one line each)."""
    from gpudense.datasets import check_finite_rows, load_arrays
    from gpudense.inference import load_model, score

    model = load_model(args.checkpoint, backend=args.backend)
    x, y = load_arrays(args.data, what="--data")
    check_finite_rows(x, model.dtype, f"--data {args.data}")
    result = score(model, x, y, batch_size=args.batch_size, what=f"--data {args.data}")
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "data": args.data, **result}))
        return 0
    out = sys.stdout
    print(f"model: {model!r}", file=out)
    print(f"data: {args.data}, {result['samples']} samples", file=out)
    print(f"loss {result['loss']:.4f}  accuracy {result['accuracy']:.4f}", file=out)
    classes = result["classes"]
    print(f"{'class':>5} {'count':>9} {'correct':>9} {'predicted':>9} {'accuracy':>9}", file=out)
    for c, (count, correct, predicted) in enumerate(zip(classes["count"], classes["correct"], classes["predicted"])):
        acc = f"{correct / count:.4f}" if count else "-"
        print(f"{c:>5} {count:>9} {correct:>9} {predicted:>9} {acc:>9}", file=out)
    return 0
