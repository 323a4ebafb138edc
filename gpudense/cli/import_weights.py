"""``gpudense import MODEL.safetensors CHECKPOINT``: a checkpoint from ``.safetensors`` weights.

The file is one ``gpudense export`` wrote, or one saved from a
``torch.nn.Sequential`` of ``nn.Linear`` and activations
(``safetensors.torch.save_file(seq.state_dict(), path)``); then
``--activation`` names the activation between the layers (default relu).
The checkpoint (epoch 0, no optimizer state) works with ``gpudense evaluate``
and ``gpudense predict``.
"""

from __future__ import annotations

import argparse

from gpudense.cli._common import check_output_path, path_value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``gpudense import``'s arguments on ``parser``."""
    parser.add_argument("source", metavar="MODEL.safetensors", type=path_value, help="the .safetensors file to read")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=path_value, help="the checkpoint (.npz) to write")
    parser.add_argument("--activation", choices=["relu", "gelu", "tanh"], default=None,
                        help="the hidden layers' activation (default: the file's gpudense metadata, else relu; "
                             "gelu is nn.GELU(approximate='tanh'))")


def run(args: argparse.Namespace) -> int:
    """The ``gpudense import`` subcommand; errors propagate to :func:`gpudense.cli.main` (one line each)."""
    from gpudense.checkpoint import check_target, save_checkpoint
    from gpudense.safetensors_io import _safetensors, load_safetensors

    _safetensors()
    check_output_path("CHECKPOINT", args.checkpoint)
    check_target(args.checkpoint)
    model = load_safetensors(args.source, activation=args.activation, backend="numpy")
    save_checkpoint(args.checkpoint, model, epoch=0, extra={"imported_from": args.source})
    print(f"imported: {args.checkpoint} ({model!r})")
    return 0
