"""``gpudense export CHECKPOINT MODEL.safetensors``: a checkpoint's weights for PyTorch and Hugging Face tools.

The names and layout are those of ``torch.nn.Sequential(nn.Linear, act,
..., nn.Linear)`` (:mod:`gpudense.safetensors_io`), so
``seq.load_state_dict(safetensors.torch.load_file(path))`` loads them. The
file is written atomically. ``gpudense import`` reads one back.
"""

from __future__ import annotations

import argparse

from gpudense.cli._common import check_output_path, path_value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``gpudense export``'s arguments on ``parser``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=path_value,
                        help="a checkpoint written by gpudense train --save")
    parser.add_argument("out", metavar="MODEL.safetensors", type=path_value, help="the .safetensors file to write")


def run(args: argparse.Namespace) -> int:
    """The ``gpudense export`` subcommand; errors propagate to :func:`gpudense.cli.main` (one line each)."""
    from gpudense.inference import load_model
    from gpudense.safetensors_io import _safetensors, save_safetensors, torch_names

    _safetensors()  # a missing package is said before anything is read
    check_output_path("output", args.out, suffix=".safetensors")
    model = load_model(args.checkpoint, backend="numpy")
    save_safetensors(model, args.out)
    names = ", ".join(torch_names(model))
    print(f"exported: {args.out} ({model!r}; tensors {names})")
    return 0
