"""``gpudense train``: train an MLP classifier on real bundled data (or a large synthetic set).

By default: scikit-learn's handwritten digits (1,797 8x8 images, shipped
inside scikit-learn, no download), a stratified 80/20 split with seed 0, an
MLP 64-256-10 with ReLU trained by Adam on mini-batches, a progress bar per
epoch (on a terminal), a summary line per epoch and finally
``test accuracy: 0.9xx``.

The same code runs on every backend: the model lives on one backend
(``--backend``), the data are copied there once when they fit (batch by batch
otherwise). ``--save`` writes a checkpoint after every epoch; ``--resume``
continues from one exactly as if the run had not stopped (the shuffling
generator's state is in the checkpoint). ``--profile`` wraps every epoch and
step in NVTX ranges ``gpudense.train.epoch`` / ``gpudense.train.step``.

Under a launcher (``mpiexec -n N gpudense train``) the run is data-parallel
(``--distributed``, :mod:`gpudense.distributed`): ``--batch-size`` is the
global batch, split across the ranks; rank 0 alone prints, draws the bar and
writes files, and a rank that fails ends the whole job (docs/distributed.md).

This module is the command line only: options, their resolution against a
checkpoint, printing, the progress bar and exit codes. The training itself
is :func:`gpudense.training.fit`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gpudense import training
from gpudense._blas import step_threads
from gpudense.backends import BACKEND_NAMES
from gpudense.checkpoint import CheckpointError, check_target, load_checkpoint, save_checkpoint
from gpudense.cli._checkpoints import check_data_shape, check_not_foreign, data_shape, saved_history, stopped_note
from gpudense.cli._common import (blas_threads, check_distinct_paths, check_output_path, finite_float, int_at_least,
                                  option_errors, path_value, progress_bar)
from gpudense.cli._data_options import DATA_DEFAULTS, data_identity, resolve_data_options
from gpudense.cli._distributed import on_rank0, split_note, start_distributed
from gpudense.data import Dataset, load_digits, make_synthetic
from gpudense.datasets import load_dataset
from gpudense.distributed.comm import Communicator
from gpudense.nn import MLP
from gpudense.optim import OPTIMIZERS, Optimizer, make_optimizer
from gpudense.plotting import import_pyplot, plot_history

DEFAULTS = {
    **DATA_DEFAULTS,
    "epochs": 20,
    "batch_size": 32,
    "hidden": (256,),
    "activation": "relu",
    "optimizer": "adam",
    "seed": 0,
}
#: Learning rate when --lr is not given, per optimizer.
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}


def _hidden(text: str) -> tuple[int, ...]:
    """``"128,64"`` -> (128, 64); ``"none"`` -> () (a linear model); an empty value is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected comma-separated positive layer sizes like 128,128, or none "
                                         f"for a linear model; got {text!r} (an unset shell variable?)")
    if text.strip().lower() == "none":
        return ()
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive layer sizes like 128,128; got {text!r}"
            )
        sizes.append(int(part))
    return tuple(sizes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``gpudense train``'s options on ``parser``."""
    positive, non_negative = finite_float(positive=True), finite_float(positive=False)
    parser.usage = "gpudense train [options]   (gpudense train --help lists them)"
    parser.description = (
        "Train an MLP classifier. Default: scikit-learn's bundled handwritten digits, "
        "stratified 80/20 split, MLP 64-256-10 (ReLU), Adam (lr 0.002)."
    )
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", choices=["digits", "synthetic"],
                   help="digits (bundled with scikit-learn; default) or synthetic Gaussian blobs")
    g.add_argument("--samples", metavar="N", type=int_at_least(2),
                   help=f"synthetic: total samples, 20%% held out for test (default {DEFAULTS['samples']})")
    g.add_argument("--features", metavar="N", type=int_at_least(1),
                   help=f"synthetic: features per sample (default {DEFAULTS['features']})")
    g.add_argument("--classes", metavar="N", type=int_at_least(2),
                   help=f"synthetic: number of classes (default {DEFAULTS['classes']})")
    g.add_argument("--data", metavar="PATH", type=path_value,
                   help="train on your own data instead of --dataset: data.npz (arrays x, y), X.npy,Y.npy "
                        "(memory-mapped) or a directory with x.npy and y.npy (docs/own-data.md)")
    g.add_argument("--val-data", metavar="PATH", type=path_value,
                   help="with --data: the test set, in the same forms (default: a stratified 20%% of --data)")
    g = parser.add_argument_group("model and training")
    g.add_argument("--backend", choices=list(BACKEND_NAMES), default="auto",
                   help="auto (CuPy if a CUDA device is usable, else NumPy; default), numpy or cupy")
    g.add_argument("--dtype", choices=["float16", "bfloat16", "float32", "float64"], default="float32",
                   help="parameter and data type (default float32; bfloat16 needs ml_dtypes)")
    g.add_argument("--hidden", type=_hidden, default=DEFAULTS["hidden"], metavar="SIZES",
                   help="hidden layer sizes, comma-separated, e.g. 128,128 (default 256)")
    g.add_argument("--activation", choices=["relu", "gelu", "tanh"], default=DEFAULTS["activation"],
                   help="hidden-layer activation (default relu; gelu is the tanh form)")
    g.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None,
                   help="default adam (on --resume: the checkpoint's; a different one is an error)")
    g.add_argument("--lr", metavar="LR", type=positive, default=None,
                   help="learning rate (default: sgd 0.05, adam/adamw 0.002; "
                        "on --resume, the checkpoint's unless given)")
    g.add_argument("--momentum", metavar="M", type=non_negative, default=None,
                   help="sgd momentum (default 0.9; on --resume: the checkpoint's, a different value is an error)")
    g.add_argument("--weight-decay", metavar="WD", type=non_negative, default=None,
                   help="weight decay (default: 0; adamw 0.01; on --resume: the checkpoint's, "
                        "a different value is an error)")
    g.add_argument("--epochs", metavar="N", type=int_at_least(0), default=DEFAULTS["epochs"],
                   help="total epochs, counting those of a resumed checkpoint (default %(default)s)")
    g.add_argument("--batch-size", type=int_at_least(1), default=None, metavar="N",
                   help=f"samples per step (default {DEFAULTS['batch_size']}; on --resume: the "
                        "checkpoint's, a different value is an error)")
    g.add_argument("--seed", metavar="N", type=int_at_least(0), default=DEFAULTS["seed"],
                   help="seeds the split, the initial weights and the shuffling (default %(default)s)")
    g.add_argument("--threads", metavar="N", type=int_at_least(1), default=None,
                   help="BLAS threads for the numpy backend (default: 1 for digits, whose small "
                        "matrices only lose from threads; the BLAS default otherwise); needs threadpoolctl")
    g = parser.add_argument_group("output")
    g.add_argument("--save", metavar="PATH", type=path_value,
                   help="write a checkpoint (.npz) here after every epoch (a regular file, a new path, "
                        "or a symbolic link to one: the file it names is replaced)")
    g.add_argument("--resume", metavar="PATH", type=path_value, help="continue from this checkpoint")
    g.add_argument("--overwrite", action="store_true",
                   help="let --save replace a file that is not a gpudense checkpoint (refused otherwise)")
    g.add_argument("--plot", metavar="PATH", type=path_value,
                   help="write loss and accuracy curves to this PNG (a path ending in .png)")
    g.add_argument("--profile", action="store_true",
                   help="NVTX ranges gpudense.train.epoch / gpudense.train.step (for nsys)")
    g.add_argument("--quiet", action="store_true", help="no progress bar (summary lines still print)")
    g = parser.add_argument_group("distributed (under mpiexec or srun; see docs/distributed.md)")
    g.add_argument("--distributed", choices=["auto", "off", "mpi", "nccl"], default="auto",
                   help="auto (default): data-parallel when a launcher started more than one process "
                        "(NCCL on --backend cupy, MPI on numpy); off: each process trains alone; "
                        "mpi or nccl: that engine")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``gpudense train``'s options from ``argv`` (for tests and scripts)."""
    parser = argparse.ArgumentParser(prog="gpudense train")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _resolve_options(args: argparse.Namespace, ckpt: Any) -> argparse.Namespace:
    """``args`` with --optimizer, --momentum, --weight-decay and --batch-size filled in.

    Without a checkpoint: the defaults. With one (``--resume``): the
    checkpoint's values; an option given on the command line that differs
    from the checkpoint's value is a ValueError naming both (a resumed run
    continues the same training; only --lr and --epochs may change).
    """
    args = argparse.Namespace(**vars(args))
    resolve_data_options(args)
    opt_state = ckpt.optimizer_state if ckpt is not None else None

    def conflict(option: str, given: Any, saved: Any, what: str) -> ValueError:
        return ValueError(
            f"{option} {given} conflicts with checkpoint {args.resume}, whose {what} is {saved}; "
            f"omit {option} to continue with the checkpoint's value"
        )

    if opt_state is not None:
        names = {cls.__name__: name for name, cls in OPTIMIZERS.items()}
        saved_opt = names.get(opt_state["type"])
        if saved_opt is not None:  # an unknown type fails in restore, with the reason
            if args.optimizer is not None and args.optimizer != saved_opt:
                raise conflict("--optimizer", args.optimizer, saved_opt, "optimizer")
            args.optimizer = saved_opt
            hyper = opt_state["hyperparams"]
            options = [("--weight-decay", "weight_decay")]
            if saved_opt == "sgd":
                options.append(("--momentum", "momentum"))
            for option, key in options:
                dest = option[2:].replace("-", "_")
                given, saved = getattr(args, dest), hyper.get(key)
                if given is not None and saved is not None and float(given) != float(saved):
                    raise conflict(option, given, saved, key)
                if saved is not None:
                    setattr(args, dest, float(saved))
    if ckpt is not None:
        saved_batch = ckpt.extra.get("batch_size")
        if saved_batch is not None:
            if isinstance(saved_batch, bool) or not isinstance(saved_batch, int) or saved_batch < 1:
                raise ValueError(f"checkpoint {args.resume}: batch_size must be a positive int; got {saved_batch!r}")
            if args.batch_size is not None and args.batch_size != saved_batch:
                raise conflict("--batch-size", args.batch_size, saved_batch, "batch size")
            args.batch_size = saved_batch
    if args.optimizer is None:
        args.optimizer = DEFAULTS["optimizer"]
    if args.momentum is not None and args.optimizer != "sgd":
        raise ValueError(f"--momentum applies to --optimizer sgd only; this run uses {args.optimizer}")
    if args.momentum is None and args.optimizer == "sgd":
        args.momentum = 0.9
    if args.batch_size is None:
        args.batch_size = DEFAULTS["batch_size"]
    return args


def _load_data(args: argparse.Namespace) -> Dataset:
    if args.data is not None or args.val_data is not None:
        if args.data is None:
            raise ValueError("--val-data needs --data (the training set it goes with)")
        return load_dataset(args.data, args.val_data, dtype=args.dtype, seed=args.seed)
    if args.dataset == "digits":
        return load_digits(seed=args.seed, dtype=args.dtype)
    return make_synthetic(args.samples, args.features, args.classes, seed=args.seed, dtype=args.dtype)


def _make_optimizer(args: argparse.Namespace, model: MLP) -> Optimizer:
    kwargs: dict[str, Any] = {"lr": args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]}
    if args.weight_decay is not None:
        kwargs["weight_decay"] = args.weight_decay
    if args.optimizer == "sgd":
        kwargs["momentum"] = args.momentum
    return make_optimizer(args.optimizer, model, **kwargs)


class _EpochBar:
    """One progress bar per epoch, fed by ``fit``'s ``on_batch`` and closed before the epoch's line."""

    def __init__(self, n: int, epochs: int) -> None:
        self.n, self.epochs, self.bar = n, epochs, None

    def on_batch(self, epoch: int, step: int, seen: int, loss_sum: Any, correct: Any) -> None:
        if self.bar is None:
            self.bar = progress_bar(self.n, enabled=True, file=sys.stdout, desc=f"epoch {epoch}/{self.epochs}",
                                    unit="sample", unit_scale=self.n >= 100_000, dynamic_ncols=True)
        self.bar.update(seen - self.bar.n)
        if step % 20 == 0:  # reading device numbers waits for the device: only now and then
            self.bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{int(correct) / seen:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class TrainRun:
    """What :func:`train` returns.

    Attributes:
        history: Every epoch's results, those of a resumed checkpoint included.
        test_accuracy: The final model's accuracy on the test set.
        model, optimizer: As trained.
    """

    history: training.History
    test_accuracy: float
    model: MLP
    optimizer: Optimizer


def train(args: argparse.Namespace, *, out: Any = None, comm: Communicator | None = None) -> TrainRun:
    """Run the training that ``args`` (as :func:`parse_args` returns) describes; print to ``out``.

    With ``comm`` (a :class:`~gpudense.distributed.Communicator`) the run is
    data-parallel over its ranks, every rank calling this: rank 0 alone
    prints, saves the checkpoint and the plot; every rank returns the result.

    Raises:
        ValueError: bad options or a checkpoint that does not fit
            (:class:`~gpudense.checkpoint.CheckpointError`).
        RuntimeError: an unavailable backend, a missing optional package, or
            a diverged run.
    """
    # Matrices of the digits run (32 x 64 x 256) are too small for BLAS threads to pay; on a
    # busy 2-core machine OpenBLAS's spinning threads made the default run ten times slower.
    digits = args.data is None and args.dataset in (None, "digits")
    limit = args.threads if args.threads is not None else (1 if digits else None)
    with blas_threads(limit, option="--threads", extra="train", required=args.threads is not None):
        return _train(args, out=sys.stdout if out is None else out, comm=comm)


def _train(args: argparse.Namespace, *, out: Any, comm: Communicator | None = None) -> TrainRun:
    rank0 = comm is None or comm.rank == 0

    def say(text: str) -> None:
        if rank0:
            print(text, file=out, flush=True)

    def preflight() -> None:  # every output is checked before any data is loaded
        check_output_path("--save", args.save)
        if args.save:
            check_target(args.save)  # a directory, FIFO, socket or device there is refused
            if not args.overwrite:
                check_not_foreign("--save", args.save)
        check_output_path("--plot", args.plot, suffix=".png")
        check_distinct_paths({"--save": args.save, "--resume": args.resume, "--plot": args.plot},
                             outputs=["--plot"])
        if args.plot:
            import_pyplot("--plot", "train")

    on_rank0(comm, preflight)
    ckpt = on_rank0(comm, lambda: load_checkpoint(args.resume)) if args.resume else None
    history = saved_history(args.resume, ckpt) if ckpt is not None else training.History()
    args = _resolve_options(args, ckpt)
    trained_on = ckpt.extra.get("data") if ckpt is not None else None
    if trained_on is not None and trained_on != data_identity(args):  # before any data are loaded
        raise CheckpointError(
            f"checkpoint {args.resume} was trained on {trained_on}; this run asks for "
            f"{data_identity(args)} (give the same --dataset/--data/--val-data/--seed/--samples/--features/--classes)"
        )

    ds = _load_data(args)
    if ckpt is not None:
        check_data_shape(args.resume, ckpt, ds)
    sizes = [ds.n_features, *args.hidden, ds.n_classes]
    init_seq, shuffle_seq = np.random.SeedSequence(args.seed).spawn(2)
    model = MLP(sizes, activation=args.activation, dtype=args.dtype, backend=args.backend,
                rng=np.random.default_rng(init_seq))
    optimizer = _make_optimizer(args, model)
    optimizer.threads = step_threads(model.backend)  # as many as the products use, where that pays
    shuffle_rng = np.random.default_rng(shuffle_seq)

    start_epoch = 0
    if ckpt is not None:
        ckpt.restore(model, optimizer, shuffle_rng)
        if args.lr is not None:
            optimizer.lr = args.lr
        start_epoch = ckpt.epoch

    say(f"data: {ds.name}, {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test samples, "
        f"{ds.n_features} features, {ds.n_classes} classes")
    say(f"model: {model!r}")
    say(f"optimizer: {optimizer!r}, batch size {args.batch_size}")
    if comm is not None:
        say(f"distributed: {comm.describe()}; {split_note(args.batch_size, comm.size)}")
    if ckpt is not None:
        say(f"resumed from {args.resume} at epoch {start_epoch}")
        if trained_on is None:
            say(f"note: checkpoint {args.resume} does not record the data it was trained on (it was not saved "
                f"by gpudense train); resuming on {ds.name} as asked, unchecked")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", training.DataOnHostWarning)
        placed = training.to_device(ds, model.backend)
    for w in caught:
        if not isinstance(w.message, training.DataOnHostWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif w.message.part == "train":
            say("note: the training set does not fit on the device; copying it batch by batch")

    if ckpt is None and args.epochs == 0:
        say("--epochs 0: no training; evaluating the initial model")
    elif start_epoch >= args.epochs:
        say(f"checkpoint is at epoch {start_epoch}, --epochs is {args.epochs}: nothing to train; evaluating it")

    n = int(ds.x_train.shape[0])
    bar = _EpochBar(n, args.epochs)
    # The last complete checkpoint, for the line a signal ends the run with.
    last = (args.resume, start_epoch) if ckpt is not None else None
    show_bar = rank0 and not args.quiet and out is sys.stdout and sys.stdout.isatty()

    def epoch_done(stats: training.EpochStats, history: training.History) -> None:
        nonlocal last
        bar.close()
        say(f"epoch {stats.epoch:>3}/{stats.epochs}  loss {stats.loss:.4f}  train acc {stats.train_acc:.4f}  "
            f"test acc {stats.test_acc:.4f}  {stats.seconds:6.2f} s  ({n / stats.seconds:,.0f} samples/s)")
        if args.save:  # rank 0 writes; every rank learns that it has (or why not) before counting it as last
            on_rank0(comm, lambda: save_checkpoint(args.save, model, optimizer, epoch=stats.epoch, rng=shuffle_rng,
                                                   extra={"data": data_identity(args), "data_shape": data_shape(ds),
                                                          "history": history.as_dict(),
                                                          "batch_size": args.batch_size}))
            last = (args.save, stats.epoch)

    config = training.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, rng=shuffle_rng,
                                  profile=args.profile)
    try:
        history = training.fit(model, optimizer, placed, config, start_epoch=start_epoch, history=history,
                               on_epoch=epoch_done, on_batch=bar.on_batch if show_bar else None, comm=comm)
    except training.DivergenceError as exc:
        raise RuntimeError(
            f"training diverged in epoch {exc.epoch}: the mean loss is {exc.loss}; "
            f"try a lower --lr (this run used {optimizer.lr:g})"
        ) from exc
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (gpudense.cli.Stopped)
        exc.note = stopped_note(last, args.save)  # type: ignore[attr-defined]
        raise
    finally:
        bar.close()
    if start_epoch < args.epochs:
        test_acc = history.test_acc[-1]
    else:
        test_acc = training.evaluate(model, placed.x_test, placed.y_test)
    if args.save and start_epoch < args.epochs:
        say(f"checkpoint: {args.save} (epoch {args.epochs})")
    if args.plot and rank0:
        with option_errors("--plot"):
            plot_history(history, args.plot, title=f"gpudense train: {ds.name}, MLP {'-'.join(map(str, sizes))}")
        say(f"plot: {args.plot}")
    say(f"test accuracy: {test_acc:.3f}")
    return TrainRun(history, test_acc, model, optimizer)


def run(args: argparse.Namespace) -> int:
    """The ``gpudense train`` subcommand; returns the exit status (errors propagate to :func:`gpudense.cli.main`).

    Distributed, an error on one rank alone ends every rank (``MPI_Abort``)
    after printing itself with the rank's number; an error every rank
    raises at once (a set-up mismatch, a diverged loss) ends each normally.
    Ranks other than 0 print no warnings.
    """
    from gpudense.distributed import abort_on_error

    with abort_on_error("gpudense train", collective=(training.DivergenceError,)):
        comm = start_distributed(args)
        with warnings.catch_warnings():
            if comm is not None and comm.rank:
                warnings.simplefilter("ignore")
            train(args, comm=comm)
    return 0
