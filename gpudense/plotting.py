"""Plots: matplotlib, imported only when a plot is asked for (it is an optional dependency).

:func:`plot_history` draws a training run's curves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpudense.history import History

__all__ = ["import_pyplot", "plot_history"]


def import_pyplot(option: str = "--plot", extra: str = "train") -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Args:
        option: What asked for the plot, named in the error (e.g. ``"--plot"``).
        extra: The gpudense extra that installs matplotlib, named in the error.

    Raises:
        RuntimeError: matplotlib is not installed (one line: what needs it, what to install).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(f"{option} needs matplotlib ({exc}); install it with pip install 'gpudense[{extra}]'") from exc
    return plt


def plot_history(history: "History", path: str, *, title: str = "") -> None:
    """Write a training run's loss and accuracy per epoch to a PNG at ``path``.

    Left: the mean training loss per epoch (log scale). Right: the training
    accuracy during each epoch and the test accuracy at its end, titled with
    the final test accuracy.

    The file is written atomically (to a temporary sibling, then renamed
    over ``path``), so a full disk or a signal leaves the previous file, or
    none, never a truncated PNG.

    Args:
        history: A :class:`~gpudense.training.History`.
        path: The PNG file to write: a regular file or a new path in a folder that exists.
        title: A title over both panels.

    Raises:
        RuntimeError: matplotlib is not installed.
        ValueError: ``path`` ends in a path separator or is a directory,
            FIFO, socket or device.
        OSError: the file cannot be written (one line naming it).

    Example:
        >>> from gpudense.training import History
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
        >>> plot_history(History([1.0, 0.5], [0.6, 0.8], [0.7, 0.9], [0.1, 0.1]), path)
        >>> os.path.getsize(path) > 0
        True
    """
    from gpudense._files import atomic_write, regular_target

    target = regular_target(path, "plot")
    plt = import_pyplot("plot_history")
    from matplotlib.ticker import MaxNLocator

    epochs = list(range(1, len(history.loss) + 1))
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
    try:
        atomic_write(target, lambda f: fig.savefig(f, format="png", dpi=120), "plot")
    finally:
        plt.close(fig)
