"""``gpudense bench``: the command line over :mod:`gpudense.benchmark`.

Options become a :class:`~gpudense.benchmark.config.BenchConfig`; every
option is checked (values, shape names, output paths, matplotlib for
``--plot``) before the sweep starts. The sweep runs with the BLAS thread
pools limited to ``--threads``; the table is printed, and written with the
JSON and the plot where asked. ``--nsys OUT`` runs the same command again
under Nsight Systems instead.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from typing import Any, Sequence

from gpudense.benchmark.config import DTYPES, BenchConfig
from gpudense.benchmark import machine
from gpudense.benchmark.report import format_table, write_json, write_plot, write_text
from gpudense.benchmark.sweep import sweep
from gpudense.cli._common import (blas_threads, check_distinct_paths, check_output_path, int_at_least, path_value,
                                  progress_bar)

NSYS_RECIPE = (
    "nsys profile -t cuda,nvtx -o gpudense-bench --force-overwrite true "
    "gpudense bench --shapes square --dtypes float32 --repeats 20"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gpudense bench``; a bad value is a one-line error (exit status 2)."""

    def one_line_error(message: str) -> None:
        # argparse would print the long usage first; one line, like run()'s errors.
        parser.exit(2, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")

    parser.error = one_line_error  # type: ignore[method-assign]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Default shapes (batch x in x out). GPU: small 128x64x64, tall-narrow 1048576x64x64,\n"
        "square 4096x4096x4096, transformer 8192x4096x16384; dtypes float32, tf32, float16.\n"
        "CPU: small 128x64x64, tall-narrow 1048576x64x64, square 2048x2048x2048,\n"
        "transformer 2048x1024x4096; dtype float32. --quick: CPU small, tall-narrow\n"
        "131072x64x64, square 512^3, 10 repeats (under a minute on 2 cores).\n"
        f"Nsight Systems timeline with NVTX stage ranges:\n  {NSYS_RECIPE}\n"
        "or add --nsys OUT to have gpudense run that for you."
    )
    parser.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"),
                        help="backend to time (default: auto)")
    parser.add_argument("--shapes", help="comma-separated shape names or BATCHxINxOUT")
    parser.add_argument("--dtypes", help=f"comma-separated, from {', '.join(DTYPES)}")
    parser.add_argument("--repeats", type=int_at_least(1),
                        help="timed repeats per stage (default 20; --quick 10)")
    parser.add_argument("--warmup", type=int_at_least(0), help="untimed warm-up calls per stage (default 2)")
    parser.add_argument("--threads", type=int_at_least(1),
                        help="CPU threads for BLAS and torch (default: all usable cores)")
    parser.add_argument("--quick", action="store_true", help="smaller sweep, under a minute on a CPU")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes and 3 repeats: checks the harness runs (for tests)")
    parser.add_argument("--json", metavar="PATH", type=path_value, help="write raw samples and environment as JSON")
    parser.add_argument("--table", metavar="PATH", type=path_value, help="also write the table to this file")
    parser.add_argument("--plot", metavar="PATH", type=path_value, help="write a PNG of fraction of ceiling per stage")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch.nn.Linear comparison")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--nsys", metavar="OUT",
                        help="re-run this command under `nsys profile -t cuda,nvtx -o OUT`")


_FLAGS = ("backend", "shapes", "dtypes", "repeats", "warmup", "threads", "quick", "smoke",
          "json", "table", "plot", "no_torch", "no_progress", "seed", "nsys")


def argv_of(args: argparse.Namespace, *, drop: Sequence[str] = ()) -> list[str]:
    """The ``gpudense bench`` options that ``args`` stands for, as a command line (less ``drop``).

    Example:
        >>> argv_of(argparse.Namespace(backend="numpy", quick=True, seed=0))
        ['--backend', 'numpy', '--quick', '--seed', '0']
    """
    argv: list[str] = []
    for key in _FLAGS:
        value = getattr(args, key, None)
        if key in drop or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def config_of(args: argparse.Namespace) -> BenchConfig:
    """The benchmark configuration the options ask for (``--smoke`` wins over ``--quick``).

    Raises:
        ValueError, TypeError: a value the configuration does not accept (e.g. an unknown dtype).
    """
    return BenchConfig(
        backend=args.backend, mode="smoke" if args.smoke else ("quick" if args.quick else "full"),
        shapes=args.shapes or None, dtypes=args.dtypes or None, repeats=args.repeats,
        warmup=args.warmup, threads=args.threads, torch=not args.no_torch, seed=args.seed,
    )


def check_outputs(args: argparse.Namespace) -> None:
    """Fail at once, before the sweep, where ``--json``/``--table``/``--plot`` cannot be written.

    Checks that ``--plot`` ends in ``.png``, that no path is an existing
    folder, that each path's folder exists (a missing one is refused, as
    ``gpudense train`` refuses it) and is writable, and that matplotlib
    imports for ``--plot``.

    Raises:
        ValueError, OSError, RuntimeError: with a one-line message naming the option.
    """
    for flag, path in (("--json", args.json), ("--table", args.table), ("--plot", args.plot)):
        check_output_path(flag, path, suffix=".png" if flag == "--plot" else None)
    check_distinct_paths({"--json": args.json, "--table": args.table, "--plot": args.plot},
                         outputs=["--json", "--table", "--plot"])
    if args.plot:
        from gpudense.plotting import import_pyplot

        import_pyplot("--plot", "bench")


def _nsys(args: argparse.Namespace) -> int:
    exe = shutil.which("nsys")
    if exe is None:
        raise RuntimeError("--nsys: nsys (Nsight Systems) is not on PATH; install it or run: "
                           + NSYS_RECIPE)
    cmd = [exe, "profile", "-t", "cuda,nvtx", "-o", args.nsys, "--force-overwrite", "true",
           sys.executable, "-m", "gpudense", "bench"] + argv_of(args, drop=("nsys",))
    print(" ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd).returncode


class _Progress:
    """The sweep's ``progress(done, total, what)`` shown as a progress bar made on the first call.

    :meth:`within` (the sweep's ``step_progress``) moves the bar through a
    step call by call, so it moves every call even in a step of minutes.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.step = 0

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is None:
            self.bar = progress_bar(total, enabled=self.enabled, unit="step",
                                    bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        self.step = done
        self.bar.update(done - self.bar.n)
        self.bar.set_description(what)  # refreshes the bar, with the new count

    def within(self, done: int, total: int) -> None:
        if self.bar is not None and total:
            self.bar.update(self.step + done / total - self.bar.n)  # tqdm redraws at most 10 times a second

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Run ``gpudense bench``; print the table; write the table, JSON and plot where asked.

    Returns:
        0, or ``nsys``'s exit status with ``--nsys``.

    Raises:
        ValueError, OSError, RuntimeError: a bad option, output path or
            missing package, before the sweep (printed on one line by
            :func:`gpudense.cli.main`).
    """
    from gpudense.backends import get_backend

    config = config_of(args)
    check_outputs(args)  # before a sweep of minutes, not after it
    if args.nsys:
        return _nsys(args)
    config = config.with_defaults(get_backend(config.backend).name)  # checks the shape names
    progress = _Progress(enabled=not args.no_progress)

    def note(text: str) -> None:  # before the sweep, not only under the table at its end
        print(f"gpudense bench: note: {text}", file=sys.stderr, flush=True)

    busy = machine.busy_warning()
    if busy:
        print(f"gpudense bench: warning: {busy}", file=sys.stderr, flush=True)

    try:
        with blas_threads(config.threads, extra="bench"):
            doc = sweep(config, progress=progress, step_progress=progress.within, on_note=note,
                        command=["gpudense", "bench"] + argv_of(args))
    finally:
        progress.close()
    table = format_table(doc)
    print(table)
    sys.stdout.flush()
    for flag, path, write in (("--table", args.table, lambda p: write_text(p, table + "\n")),
                              ("--json", args.json, lambda p: write_json(doc, p)),
                              ("--plot", args.plot, lambda p: write_plot(doc, p))):
        if path:
            try:
                write(path)
            except OSError as exc:  # a full disk says only "[Errno 28] No space left on device"
                raise OSError(f"{flag} {path}: cannot write: {exc.strerror or exc}") from exc
    return 0
