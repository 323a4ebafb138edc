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

The training loop is also a function, :func:`fit`, which returns the history.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np

from gpudense.backends import BACKEND_NAMES
from gpudense.losses import softmax_cross_entropy
from gpudense.optim import OPTIMIZERS

DEFAULTS = {
    "dataset": "digits",
    "epochs": 20,
    "batch_size": 32,
    "hidden": (256,),
    "activation": "relu",
    "optimizer": "adam",
    "seed": 0,
    "samples": 100_000,
    "features": 784,
    "classes": 10,
}
#: Learning rate when --lr is not given, per optimizer.
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
EVAL_BATCH = 8192


# -- option types: argparse turns their ArgumentTypeError into a one-line error ----------
def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def _finite_float(*, positive: bool) -> Callable[[str], float]:
    """A finite float > 0 (``positive``) or >= 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (np.isfinite(value) and (value > 0 if positive else value >= 0)):
            wanted = "a positive number" if positive else "a number >= 0"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = "float>0" if positive else "float>=0"
    return parse


_positive_float = _finite_float(positive=True)
_nonneg_float = _finite_float(positive=False)


def _hidden(text: str) -> tuple[int, ...]:
    """``"128,64"`` -> (128, 64); ``""`` or ``"none"`` -> () (a linear model)."""
    if text.strip().lower() in ("", "none"):
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
    parser.usage = "gpudense train [options]   (gpudense train --help lists them)"
    parser.description = (
        "Train an MLP classifier. Default: scikit-learn's bundled handwritten digits, "
        "stratified 80/20 split, MLP 64-256-10 (ReLU), Adam (lr 0.002)."
    )
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", choices=["digits", "synthetic"], default=DEFAULTS["dataset"],
                   help="digits (bundled with scikit-learn; default) or synthetic Gaussian blobs")
    g.add_argument("--samples", metavar="N", type=_int_at_least(2), default=DEFAULTS["samples"],
                   help="synthetic: total samples, 20%% held out for test (default %(default)s)")
    g.add_argument("--features", metavar="N", type=_int_at_least(1), default=DEFAULTS["features"],
                   help="synthetic: features per sample (default %(default)s)")
    g.add_argument("--classes", metavar="N", type=_int_at_least(2), default=DEFAULTS["classes"],
                   help="synthetic: number of classes (default %(default)s)")
    g = parser.add_argument_group("model and training")
    g.add_argument("--backend", choices=list(BACKEND_NAMES), default="auto",
                   help="auto (CuPy if a CUDA device is usable, else NumPy; default), numpy or cupy")
    g.add_argument("--dtype", choices=["float16", "float32", "float64"], default="float32",
                   help="parameter and data type (default float32)")
    g.add_argument("--hidden", type=_hidden, default=DEFAULTS["hidden"], metavar="SIZES",
                   help="hidden layer sizes, comma-separated, e.g. 128,128 (default 256)")
    g.add_argument("--activation", choices=["relu", "gelu", "tanh"], default=DEFAULTS["activation"],
                   help="hidden-layer activation (default relu; gelu is the tanh form)")
    g.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None,
                   help="default adam (on --resume: the checkpoint's; a different one is an error)")
    g.add_argument("--lr", metavar="LR", type=_positive_float, default=None,
                   help="learning rate (default: sgd 0.05, adam/adamw 0.002; "
                        "on --resume, the checkpoint's unless given)")
    g.add_argument("--momentum", metavar="M", type=_nonneg_float, default=None,
                   help="sgd momentum (default 0.9; on --resume: the checkpoint's, a different value is an error)")
    g.add_argument("--weight-decay", metavar="WD", type=_nonneg_float, default=None,
                   help="weight decay (default: 0; adamw 0.01; on --resume: the checkpoint's, "
                        "a different value is an error)")
    g.add_argument("--epochs", metavar="N", type=_int_at_least(0), default=DEFAULTS["epochs"],
                   help="total epochs, counting those of a resumed checkpoint (default %(default)s)")
    g.add_argument("--batch-size", type=_int_at_least(1), default=None, metavar="N",
                   help=f"samples per step (default {DEFAULTS['batch_size']}; on --resume: the "
                        "checkpoint's, a different value is an error)")
    g.add_argument("--seed", metavar="N", type=_int_at_least(0), default=DEFAULTS["seed"],
                   help="seeds the split, the initial weights and the shuffling (default %(default)s)")
    g.add_argument("--threads", metavar="N", type=_int_at_least(1), default=None,
                   help="BLAS threads for the numpy backend (default: 1 for digits, whose small "
                        "matrices only lose from threads; the BLAS default otherwise); needs threadpoolctl")
    g = parser.add_argument_group("output")
    g.add_argument("--save", metavar="PATH", help="write a checkpoint (.npz) here after every epoch")
    g.add_argument("--resume", metavar="PATH", help="continue from this checkpoint")
    g.add_argument("--plot", metavar="PATH", help="write loss and accuracy curves to this PNG")
    g.add_argument("--profile", action="store_true",
                   help="NVTX ranges gpudense.train.epoch / gpudense.train.step (for nsys)")
    g.add_argument("--quiet", action="store_true", help="no progress bar (summary lines still print)")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``gpudense train``'s options from ``argv`` (for tests and scripts)."""
    parser = argparse.ArgumentParser(prog="gpudense train")
    add_arguments(parser)
    return parser.parse_args(list(argv))


@dataclass
class History:
    """Per-epoch results (lists indexed by epoch - 1)."""

    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[float]]:
        return {"loss": self.loss, "train_acc": self.train_acc, "test_acc": self.test_acc, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        return cls(*(list(map(float, d.get(k, []))) for k in ("loss", "train_acc", "test_acc", "seconds")))


@dataclass
class Result:
    """What :func:`fit` returns."""

    history: History
    test_accuracy: float
    model: Any
    optimizer: Any


def _check_output_path(option: str, path: str | None) -> None:
    if path is None:
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: directory {parent} does not exist")
    if Path(path).is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file name")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{option} {path}: directory {parent} is not writable")


def _load_data(args: argparse.Namespace) -> Any:
    from gpudense import data

    if args.dataset == "digits":
        return data.load_digits(seed=args.seed, dtype=args.dtype)
    return data.make_synthetic(args.samples, args.features, args.classes, seed=args.seed, dtype=args.dtype)


def _data_identity(args: argparse.Namespace) -> dict[str, Any]:
    ident: dict[str, Any] = {"dataset": args.dataset, "seed": args.seed}
    if args.dataset == "synthetic":
        ident.update(samples=args.samples, features=args.features, classes=args.classes)
    return ident


def _to_device(backend: Any, a: np.ndarray) -> Any:
    """``a`` on ``backend``, or None when the device has no room (then batches are copied one by one)."""
    try:
        return backend.asarray(a)
    except MemoryError:  # cupy.cuda.memory.OutOfMemoryError is a MemoryError
        return None


def evaluate(model: Any, x: Any, y: Any, *, batch_size: int = EVAL_BATCH) -> float:
    """Accuracy of ``model`` on ``x`` (host or device array) against integer labels ``y``."""
    backend = model.backend
    xp = backend.xp
    n = int(x.shape[0])
    if n == 0:
        return float("nan")
    correct = xp.zeros((), dtype=xp.int64)
    for start in range(0, n, batch_size):
        xb = backend.asarray(x[start:start + batch_size])
        yb = backend.asarray(y[start:start + batch_size])
        correct += (model(xb).argmax(axis=1) == yb).sum()
    return int(correct) / n


def _make_optimizer(args: argparse.Namespace, model: Any) -> Any:
    from gpudense.optim import make_optimizer

    kwargs: dict[str, Any] = {"lr": args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]}
    if args.weight_decay is not None:
        kwargs["weight_decay"] = args.weight_decay
    if args.optimizer == "sgd":
        kwargs["momentum"] = args.momentum
    return make_optimizer(args.optimizer, model, **kwargs)


def _resolve_options(args: argparse.Namespace, ckpt: Any) -> argparse.Namespace:
    """``args`` with --optimizer, --momentum, --weight-decay and --batch-size filled in.

    Without a checkpoint: the defaults. With one (``--resume``): the
    checkpoint's values; an option given on the command line that differs
    from the checkpoint's value is a ValueError naming both (a resumed run
    continues the same training; only --lr and --epochs may change).
    """
    args = argparse.Namespace(**vars(args))
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


def _progress(total: int, desc: str, disable: bool) -> Any:
    if disable:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", unit_scale=total >= 100_000, leave=False,
                dynamic_ncols=True, file=sys.stdout)


def train_epoch(
    model: Any,
    optimizer: Any,
    x: Any,
    y: Any,
    order: Any,
    *,
    batch_size: int,
    ranges: Callable[[str], ContextManager[Any]] | None = None,
    on_batch: Callable[[int, int, Any, Any], None] | None = None,
) -> tuple[Any, Any]:
    """One epoch of mini-batch training with softmax cross-entropy.

    Args:
        model: A network (e.g. :class:`~gpudense.nn.MLP`) on some backend.
        optimizer: Its optimizer; stepped once per batch, then gradients are cleared.
        x, y: Features ``(n, n_features)`` and int labels ``(n,)``, either on
            the model's backend (then ``order`` must be too) or on the host
            (then each batch is copied to the device as it is used). Labels
            must already be valid (:func:`~gpudense.losses.check_labels`).
        order: The sample indices in the order to visit, e.g. a permutation.
        batch_size: Samples per step; the last batch may be smaller.
        ranges: ``name -> context manager`` wrapped around every step
            (``backend.nvtx_range`` for ``--profile``).
        on_batch: Called after each step as ``on_batch(step, seen, loss_sum, correct)``.

    Returns:
        ``(loss_sum, correct)``: 0-d arrays on the model's backend, the sum of
        per-sample losses (float64) and the count of correct predictions made
        during the epoch. Nothing waits for the device until they are read.
    """
    backend = model.backend
    xp = backend.xp
    ranges = ranges or (lambda name: contextlib.nullcontext())
    loss_sum = xp.zeros((), dtype=xp.float64)
    correct = xp.zeros((), dtype=xp.int64)
    n = int(order.shape[0])
    seen = 0
    for step, start in enumerate(range(0, n, batch_size)):
        with ranges("gpudense.train.step"):
            idx = order[start:start + batch_size]
            xb = backend.asarray(x[idx])  # no copy when x is on the backend already
            yb = backend.asarray(y[idx])
            logits = model(xb)
            loss, dlogits = softmax_cross_entropy(logits, yb, check=False)
            model.backward(dlogits)
            optimizer.step()
            optimizer.zero_grad()
            nb = int(xb.shape[0])
            loss_sum += loss * nb
            correct += (logits.argmax(axis=1) == yb).sum()
        seen += nb
        if on_batch is not None:
            on_batch(step, seen, loss_sum, correct)
    return loss_sum, correct


def _blas_threads(args: argparse.Namespace) -> ContextManager[Any]:
    """Limit the BLAS thread pool for the run (see ``--threads``)."""
    limit = args.threads if args.threads is not None else (1 if args.dataset == "digits" else None)
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        if args.threads is None:  # only the default asked: run with the BLAS library's own setting
            return contextlib.nullcontext()
        raise RuntimeError(f"--threads needs threadpoolctl ({exc}); pip install 'gpudense[train]'") from exc
    return threadpool_limits(limits=limit, user_api="blas")


def fit(args: argparse.Namespace, *, out: Any = None) -> Result:
    """Run the training that ``args`` (as :func:`parse_args` returns) describes; print to ``out``.

    Returns:
        A :class:`Result` with the per-epoch history (including epochs of a
        resumed checkpoint), the final test accuracy, the model and optimizer.

    Raises:
        ValueError: bad options or a checkpoint that does not fit
            (:class:`~gpudense.checkpoint.CheckpointError`).
        RuntimeError: an unavailable backend or a missing optional package.
    """
    # Matrices of the digits run (32 x 64 x 256) are too small for BLAS threads to pay; on a
    # busy 2-core machine OpenBLAS's spinning threads made the default run ten times slower.
    # NumPy's overflow/invalid warnings are silenced: a loss that becomes inf or NaN stops the
    # run with one line naming the epoch (see _fit), rather than a stream of RuntimeWarnings.
    with _blas_threads(args), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _fit(args, out=out)


def _fit(args: argparse.Namespace, *, out: Any = None) -> Result:
    from gpudense.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from gpudense.losses import check_labels
    from gpudense.nn import MLP

    out = sys.stdout if out is None else out

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    _check_output_path("--save", args.save)
    _check_output_path("--plot", args.plot)
    if args.plot:
        _import_pyplot()  # fail before training, not after
    ckpt = load_checkpoint(args.resume) if args.resume else None
    args = _resolve_options(args, ckpt)

    ds = _load_data(args)
    check_labels(ds.y_train, ds.y_train.shape[0], ds.n_classes)
    check_labels(ds.y_test, ds.y_test.shape[0], ds.n_classes)
    sizes = [ds.n_features, *args.hidden, ds.n_classes]
    init_seq, shuffle_seq = np.random.SeedSequence(args.seed).spawn(2)
    model = MLP(sizes, activation=args.activation, dtype=args.dtype, backend=args.backend,
                rng=np.random.default_rng(init_seq))
    optimizer = _make_optimizer(args, model)
    shuffle_rng = np.random.default_rng(shuffle_seq)
    backend = model.backend

    history = History()
    start_epoch = 0
    if ckpt is not None:
        trained_on = ckpt.extra.get("data")
        if trained_on is not None and trained_on != _data_identity(args):
            raise CheckpointError(
                f"checkpoint {args.resume} was trained on {trained_on}; this run asks for "
                f"{_data_identity(args)} (give the same --dataset/--seed/--samples/--features/--classes)"
            )
        ckpt.restore(model, optimizer, shuffle_rng)
        if args.lr is not None:
            optimizer.lr = args.lr
        start_epoch = ckpt.epoch
        saved = ckpt.extra.get("history", {})
        if not isinstance(saved, dict) or not all(
            isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            for v in saved.values()
        ):
            raise CheckpointError(f"checkpoint {args.resume}: extra 'history' must map names to lists of numbers")
        history = History.from_dict(saved)

    say(f"data: {ds.name}, {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test samples, "
        f"{ds.n_features} features, {ds.n_classes} classes")
    say(f"model: {model!r}")
    say(f"optimizer: {optimizer!r}, batch size {args.batch_size}")
    if ckpt is not None:
        say(f"resumed from {args.resume} at epoch {start_epoch}")

    x_train = _to_device(backend, ds.x_train)
    y_train = _to_device(backend, ds.y_train) if x_train is not None else None
    x_test = _to_device(backend, ds.x_test)
    y_test = _to_device(backend, ds.y_test) if x_test is not None else None
    if x_train is None:
        say("note: the training set does not fit on the device; copying it batch by batch")

    ranges: Callable[[str], ContextManager[Any]] = (
        backend.nvtx_range if args.profile else (lambda name: contextlib.nullcontext())
    )
    n = int(ds.x_train.shape[0])
    bar_disabled = args.quiet or not sys.stdout.isatty() or out is not sys.stdout
    test_acc = float("nan")
    if ckpt is None and args.epochs == 0:
        say("--epochs 0: no training; evaluating the initial model")
    elif start_epoch >= args.epochs:
        say(f"checkpoint is at epoch {start_epoch}, --epochs is {args.epochs}: nothing to train; evaluating it")
    for epoch in range(start_epoch, args.epochs):
        t0 = time.perf_counter()
        perm = shuffle_rng.permutation(n)
        bar = _progress(n, f"epoch {epoch + 1}/{args.epochs}", bar_disabled)

        def show(step: int, seen: int, loss_sum: Any, correct: Any, bar: Any = bar) -> None:
            bar.update(seen - bar.n)
            if step % 20 == 0:  # reading device numbers waits for the device: only now and then
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{int(correct) / seen:.4f}")

        with ranges("gpudense.train.epoch"):
            if x_train is not None:
                loss_sum, correct = train_epoch(model, optimizer, x_train, y_train, backend.asarray(perm),
                                                batch_size=args.batch_size, ranges=ranges,
                                                on_batch=None if bar is None else show)
            else:
                loss_sum, correct = train_epoch(model, optimizer, ds.x_train, ds.y_train, perm,
                                                batch_size=args.batch_size, ranges=ranges,
                                                on_batch=None if bar is None else show)
        train_loss = float(loss_sum) / n  # waits for the device
        train_acc = int(correct) / n
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        if not math.isfinite(train_loss):  # before saving: the last checkpoint stays a usable one
            raise RuntimeError(
                f"training diverged in epoch {epoch + 1}: the mean loss is {train_loss}; "
                f"try a lower --lr (this run used {optimizer.lr:g})"
            )
        test_acc = evaluate(model, x_test if x_test is not None else ds.x_test,
                            y_test if y_test is not None else ds.y_test)
        history.loss.append(train_loss)
        history.train_acc.append(train_acc)
        history.test_acc.append(test_acc)
        history.seconds.append(seconds)
        say(f"epoch {epoch + 1:>3}/{args.epochs}  loss {train_loss:.4f}  train acc {train_acc:.4f}  "
            f"test acc {test_acc:.4f}  {seconds:6.2f} s  ({n / seconds:,.0f} samples/s)")
        if args.save:
            save_checkpoint(args.save, model, optimizer, epoch=epoch + 1, rng=shuffle_rng,
                            extra={"data": _data_identity(args), "history": history.as_dict(),
                                   "batch_size": args.batch_size})
    if start_epoch >= args.epochs or not history.test_acc:
        test_acc = evaluate(model, ds.x_test, ds.y_test)
    if args.save and start_epoch < args.epochs:
        say(f"checkpoint: {args.save} (epoch {args.epochs})")
    if args.plot:
        plot_history(history, args.plot, title=f"gpudense train: {ds.name}, MLP {'-'.join(map(str, sizes))}")
        say(f"plot: {args.plot}")
    say(f"test accuracy: {test_acc:.3f}")
    return Result(history, test_acc, model, optimizer)


def _import_pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(f"--plot needs matplotlib ({exc}); install it with pip install 'gpudense[train]'") from exc
    return plt


def plot_history(history: History, path: str, *, title: str = "") -> None:
    """Write loss and accuracy per epoch to a PNG at ``path`` (matplotlib, Agg backend)."""
    plt = _import_pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(history.loss) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, history.loss, marker="o", ms=3, label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy (mean over epoch)")
    ax_loss.set_yscale("log")
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend()
    ax_acc.plot(epochs, history.train_acc, marker="o", ms=3, label="train (during epoch)")
    ax_acc.plot(epochs, history.test_acc, marker="s", ms=3, label="test (end of epoch)")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(history.test_acc):
        ax_acc.set_title(f"final test accuracy {history.test_acc[-1]:.3f}")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """The ``gpudense train`` subcommand."""
    fit(args)
    return 0
