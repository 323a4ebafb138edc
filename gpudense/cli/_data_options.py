"""``gpudense train``'s data options: where the training set comes from, and what a checkpoint records of it."""

from __future__ import annotations

import argparse
from typing import Any

#: The data options' defaults: scikit-learn's digits, or the synthetic set's sizes.
DATA_DEFAULTS = {"dataset": "digits", "samples": 100_000, "features": 784, "classes": 10}


def resolve_data_options(args: argparse.Namespace) -> None:
    """Fill in --dataset, --samples, --features and --classes; refuse them beside --data, which they cannot shape."""
    synthetic = [f"--{name}" for name in ("samples", "features", "classes") if getattr(args, name) is not None]
    if args.data is not None:
        given = (["--dataset"] if args.dataset is not None else []) + synthetic
        if given:
            raise ValueError(f"--data is the training set; {', '.join(given)} would be ignored beside it: "
                             "give one or the other")
    elif synthetic and args.dataset != "synthetic":
        raise ValueError(f"{', '.join(synthetic)} shape --dataset synthetic only; this run uses "
                         f"{args.dataset or DATA_DEFAULTS['dataset']}")
    for name in ("dataset", "samples", "features", "classes"):
        if getattr(args, name) is None:
            setattr(args, name, DATA_DEFAULTS[name])


def data_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint records of the options that named its data; a resumed run must name the same."""
    if args.data is not None:
        return {"data": args.data, "val_data": args.val_data, "seed": args.seed}
    ident: dict[str, Any] = {"dataset": args.dataset, "seed": args.seed}
    if args.dataset == "synthetic":
        ident.update(samples=args.samples, features=args.features, classes=args.classes)
    return ident
