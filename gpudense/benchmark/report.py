"""What a benchmark writes: the one table formatter, the JSON document and its check, the plot.

The result document of :func:`gpudense.benchmark.sweep.sweep` has the layout
:data:`SCHEMA`, which :func:`check_document` checks; :func:`json_text` writes
any result (NaN as null), :func:`format_table` prints a sweep, and
:func:`markdown_table` is the table every benchmark output is made of.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import numpy as np

from gpudense.benchmark.config import COMPARISONS, STAGES

#: Version of the JSON layout of a sweep's document.
SCHEMA = "gpudense-bench/1"

_ROW_KEYS = {
    "shape": str, "batch": int, "n_in": int, "n_out": int, "dtype": str, "stage": str,
    "impl": str, "samples_s": list, "stats": dict, "flops": int, "bytes": int,
    "tflops": float, "gbps": float, "frac_flops": float, "frac_bw": float,
    "fraction": float, "ratios": dict,
}

#: Marks a fraction of a ceiling above 1 in the table (see :func:`format_percent`).
ABOVE_CEILING = "!"


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """The lines of a Markdown table: ``| a | b |`` cells, one line per row, no padding.

    Args:
        head: Column titles.
        rows: Cells, already formatted, ``len(head)`` per row.
        align: One letter per column: ``l`` (left) or ``r`` (right).

    Raises:
        ValueError: a row or ``align`` does not have ``len(head)`` entries, or a letter is not l/r.

    Example:
        >>> markdown_table(["x", "y"], [["a", "1"]], "lr")
        ['| x | y |', '|---|---:|', '| a | 1 |']
    """
    if len(align) != len(head) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one l or r per column ({len(head)}); got {align!r}")
    bad = [r for r in rows if len(r) != len(head)]
    if bad:
        raise ValueError(f"every row needs {len(head)} cells; got {list(bad[0])!r}")
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return ["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(r) + " |" for r in rows]


def format_percent(frac: float | None) -> str:
    """A fraction of a ceiling as a whole percentage; above 100% marked with :data:`ABOVE_CEILING`.

    A stage that beats the measured ceiling means the ceiling under-estimates
    the hardware for that access pattern (for instance a small ``dy`` that
    stays in cache); the value is shown as measured, never capped.

    Example:
        >>> format_percent(0.5), format_percent(1.02), format_percent(None)
        ('50', '102!', '-')
    """
    if frac is None or math.isnan(frac):
        return "-"
    text = f"{100 * frac:.0f}"
    return text + ABOVE_CEILING if frac > 1.0 else text


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _header(doc: dict[str, Any]) -> list[str]:
    env = doc["environment"]
    c = doc["ceilings"]
    env_vars = env.get("env_vars") or {}
    pools = "; ".join(
        f"{b.get('internal_api')} {b.get('prefix')} {b.get('version') or ''}"
        + (f" kernel {b['architecture']}" if b.get("architecture") else "")
        + f", {b.get('num_threads')} threads" for b in env.get("blas") or [])
    copy = c.get("copy") or {}
    return [
        f"gpudense bench ({doc['settings']['mode']}) {doc['created_utc']}",
        f"backend {doc['settings']['backend']}; device: {env.get('device', env.get('cpu_model'))}; "
        f"threads {doc['settings']['threads']}; numpy {env.get('numpy')}; torch {env.get('torch')}",
        "thread pools: " + (pools or "threadpoolctl not installed"),
        *([f"torch BLAS: {tb.get('blas')} ({tb.get('blas_version')}), CPU path {tb.get('cpu_capability')}, "
           f"{tb.get('threads')} threads, {tb.get('parallel')}"] if (tb := env.get("torch_blas")) else []),
        f"OPENBLAS_CORETYPE={env_vars.get('OPENBLAS_CORETYPE')} "
        f"OPENBLAS_L2_SIZE={env_vars.get('OPENBLAS_L2_SIZE')}",
        "ceilings (fastest of the samples before and after the sweep): copy "
        + (f"{copy['gbps']:.1f} GB/s" if copy else "-")
        + (f" ({copy['threads']} threads)" if copy.get("threads") else "")
        + "; "
        + "; ".join(f"matmul {d} {m['tflops']:.3f} TFLOP/s (n={m.get('n')})"
                    for d, m in c["matmul"].items()),
        "",
    ]


def format_table(doc: dict[str, Any]) -> str:
    """A sweep's document as text: a header of facts and ceilings, then a Markdown table of the rows.

    Columns: shape, dims, dtype, stage, median/IQR/min in ms, TFLOP/s, GB/s,
    %FLOP, %BW (:func:`format_percent`) and the paired time ratios; a line
    under the table explains the ``!`` mark when a fraction is above 1, and
    the document's notes follow.

    Example:
        >>> print(format_table(doc))  # doctest: +SKIP
    """
    cells = []
    for r in doc["rows"]:
        st = r["stats"]
        cells.append([
            r["shape"], f"{r['batch']}x{r['n_in']}x{r['n_out']}", r["dtype"], r["stage"],
            f"{st['median'] * 1e3:.3f}", f"{st['iqr'] * 1e3:.3f}", f"{st['min'] * 1e3:.3f}",
            _fmt(r["tflops"], ".3f"), _fmt(r["gbps"], ".1f"),
            format_percent(r["frac_flops"]), format_percent(r["frac_bw"]),
            ", ".join(f"{v:.2f}x {k}" for k, v in r["ratios"].items()),
        ])
    head = ["shape", "batch x in x out", "dtype", "stage", "median ms", "IQR ms", "min ms",
            "TFLOP/s", "GB/s", "%FLOP", "%BW", "time ours/ref"]
    lines = _header(doc) + markdown_table(head, cells, "llllrrrrrrrl")
    if any((r[k] or 0) > 1.0 for r in doc["rows"] for k in ("frac_flops", "frac_bw")):
        lines.append(
            f"\n{ABOVE_CEILING} above 100%: the stage moved bytes (or FLOPs) faster than the "
            "measured ceiling, which then under-estimates the hardware for that access pattern "
            "(e.g. inputs served from cache); the value is not capped.")
    lines += [f"note: {n}" for n in doc["notes"]]
    return "\n".join(lines)


def check_document(doc: dict[str, Any]) -> None:
    """Check that ``doc`` has the layout :data:`SCHEMA` (keys and types), as written to JSON.

    Raises:
        ValueError: naming the first missing key or wrong type, e.g.
            ``rows[0]: missing key 'stats'``.

    Example:
        >>> check_document(json.loads(open("out.json").read()))  # doctest: +SKIP
    """
    def need(obj: dict[str, Any], key: str, typ: Any, where: str) -> Any:
        if key not in obj:
            raise ValueError(f"{where}: missing key {key!r}")
        if not isinstance(obj[key], typ):
            raise ValueError(f"{where}.{key}: expected {typ}, got {type(obj[key]).__name__}")
        return obj[key]

    if need(doc, "schema", str, "doc") != SCHEMA:
        raise ValueError(f"doc.schema: expected {SCHEMA!r}, got {doc['schema']!r}")
    for key, typ in (("created_utc", str), ("command", list), ("settings", dict),
                     ("environment", dict), ("ceilings", dict), ("rows", list), ("notes", list)):
        need(doc, key, typ, "doc")
    for key in ("numpy", "cpu_model", "threads", "torch", "blas", "env_vars", "python"):
        if key not in doc["environment"]:
            raise ValueError(f"doc.environment: missing key {key!r}")
    matmul = need(doc["ceilings"], "matmul", dict, "ceilings")
    copy = need(doc["ceilings"], "copy", dict, "ceilings")
    need(copy, "gbps", (int, float), "ceilings.copy")
    for d, m in matmul.items():
        need(m, "tflops", (int, float), f"ceilings.matmul.{d}")
    for i, row in enumerate(doc["rows"]):
        for key, typ in _ROW_KEYS.items():
            # rates are null where a ceiling is unknown (NaN is not JSON)
            need(row, key, (int, float, type(None)) if typ is float else typ, f"rows[{i}]")
        for key in ("n", "median", "q1", "q3", "iqr", "min", "max"):
            need(row["stats"], key, (int, float), f"rows[{i}].stats")
        if len(row["samples_s"]) != row["stats"]["n"]:
            raise ValueError(f"rows[{i}]: {len(row['samples_s'])} samples but stats.n={row['stats']['n']}")


def json_default(o: Any) -> Any:
    """``json.dump``'s ``default=``: NumPy scalars as Python numbers, anything else as its str."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def nan_to_none(o: Any) -> Any:
    """``o`` with every float NaN (in dicts and lists, at any depth) replaced by None."""
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [nan_to_none(v) for v in o]
    return o


def json_text(data: Any) -> str:
    """``data`` as indented JSON text: NaN as null, NumPy scalars as numbers, anything else as str.

    Example:
        >>> json_text({"a": float("nan"), "b": np.float32(0.5)})
        '{\\n "a": null,\\n "b": 0.5\\n}\\n'
    """
    return json.dumps(nan_to_none(data), indent=1, default=json_default) + "\n"


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8), creating its missing folders."""
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Check a sweep's document (as JSON will hold it) and write it to ``path``.

    Raises:
        ValueError: the document does not have the layout :data:`SCHEMA`.
    """
    text = json_text(doc)
    check_document(json.loads(text))
    write_text(path, text)


def write_plot(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """A PNG of each stage's fraction of its roofline ceiling, per shape, one panel per dtype.

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    from gpudense.plotting import import_pyplot

    plt = import_pyplot("--plot", "bench")
    dtypes = list(dict.fromkeys(r["dtype"] for r in doc["rows"]))
    stages = [s for s in STAGES + COMPARISONS if any(r["stage"] == s for r in doc["rows"])]
    fig, axes = plt.subplots(len(dtypes), 1, figsize=(10, 3.6 * max(1, len(dtypes))),
                             squeeze=False)
    for ax, dt in zip(axes[:, 0], dtypes):
        rows = [r for r in doc["rows"] if r["dtype"] == dt]
        shapes = list(dict.fromkeys(r["shape"] for r in rows))
        width = 0.8 / max(1, len(stages))
        for j, stage in enumerate(stages):
            vals = []
            for sh in shapes:
                m = [r["fraction"] for r in rows if r["shape"] == sh and r["stage"] == stage]
                vals.append(m[0] if m and m[0] is not None and not math.isnan(m[0]) else 0.0)
            ax.bar(np.arange(len(shapes)) + (j - (len(stages) - 1) / 2) * width, vals, width,
                   label=stage)
        dims = {r["shape"]: f"{r['batch']}x{r['n_in']}x{r['n_out']}" for r in rows}
        ax.set_xticks(np.arange(len(shapes)))
        ax.set_xticklabels([f"{sh}\n{dims[sh]}" for sh in shapes])
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_ylabel("fraction of ceiling")
        ax.set_title(f"{doc['settings']['backend']} {dt}: max(FLOP rate / matmul ceiling, "
                     f"bytes / copy bandwidth), median of the repeats", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=len(stages), fontsize=8, loc="upper center",
               bbox_to_anchor=(0.5, 0.955))
    env = doc["environment"]
    fig.suptitle(f"gpudense bench - {env.get('device', env.get('cpu_model'))}, "
                 f"threads {doc['settings']['threads']}, {doc['created_utc']}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.90))
    fig.savefig(path, dpi=110)
    plt.close(fig)
