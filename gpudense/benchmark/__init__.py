"""Time each stage of a dense layer against the hardware's ceilings (``gpudense bench``).

For a sweep of layer shapes ``(batch, n_in, n_out)`` and dtypes, the forward
pass, ``dx``, ``dw``, ``db`` and the whole forward+backward step are timed one
by one, next to the comparisons a user would otherwise reach for:
``dy.sum(axis=0)`` and ``ones @ dy`` for ``db``, and ``torch.nn.Linear``
forward+backward through autograd (when torch imports) for the step.

Every row gives the median time and its spread over the repeats, the achieved
TFLOP/s and GB/s, and their fractions of two ceilings measured in the same
run: a large copy (bandwidth, bytes read plus bytes written; on a CPU split
over as many threads as the stages use) and a large square matrix product per
dtype (FLOP rate). A fraction above 1 is kept as measured and marked in the
table.

Timing: on a GPU with CUDA events around each call, on a CPU with
``time.perf_counter``. The repeats are split into a few rounds; each round
runs every stage as one block (warm-up, then timed calls), so all stages and
their comparisons see the same phases of a shared machine. Inputs are random
normal numbers (never zeros) in several rotating sets whose total size
exceeds the last-level cache, so repeats do not run from cache.

The modules, each one idea:

* :mod:`~gpudense.benchmark.config`: named shapes and dtypes, modes, :class:`BenchConfig`;
* :mod:`~gpudense.benchmark.stats`: statistics of samples, work of a stage, rates;
* :mod:`~gpudense.benchmark.timing`: the CUDA-event and CPU timers, rounds of samples;
* :mod:`~gpudense.benchmark.ceilings`: the copy and matrix-product ceilings;
* :mod:`~gpudense.benchmark.machine`: caches, device memory, versions, thread pools;
* :mod:`~gpudense.benchmark.sweep`: :func:`~gpudense.benchmark.sweep.sweep`, ``config -> document``;
* :mod:`~gpudense.benchmark.torch_linear`: the PyTorch contender (``torch.nn.Linear``), and whether
  torch's 16-bit CPU product is fast enough to time;
* :mod:`~gpudense.benchmark.report`: the table, the JSON document and its check, the plot.

The GPU device checks built on these (the bias-gradient kernel against
``dy.sum(axis=0)`` and ``ones @ dy``, the fused activation gradient) are
scripts in ``bench/`` (``bench/device_check.py``, ``bench/fused_check.py``).

The package exports the configuration and the report functions; the sweep
is imported from its module (``gpudense.benchmark.sweep`` names the module).

Example:
    >>> from gpudense.benchmark import BenchConfig, format_table
    >>> from gpudense.benchmark.sweep import sweep
    >>> doc = sweep(BenchConfig(backend="numpy", mode="smoke"))  # doctest: +SKIP
    >>> print(format_table(doc))  # doctest: +SKIP
"""

from __future__ import annotations

from gpudense.benchmark.config import BenchConfig
from gpudense.benchmark.report import SCHEMA, check_document, format_table, write_json, write_plot

__all__ = ["SCHEMA", "BenchConfig", "check_document", "format_table", "write_json", "write_plot"]
