"""The table of ratios of a GPU bench run (``ratios.md``), from the raw files bench/gpu_validation.sh wrote.

    PYTHONPATH=$PWD python3 bench/gpu_report.py --out DIR          # DIR/ratios.md from DIR's JSON files
    PYTHONPATH=$PWD python3 bench/gpu_report.py --merge-layers DIR/layers.json one-dtype.json

Reads whichever of ``device_check.json``, ``fused_check.json``,
``layers.json`` and ``train_epoch.json`` are in ``DIR`` (a stage that was
cut leaves its file partial or missing; its section then says so) and
writes one Markdown table per question, each ratio with its target:

* the bias-gradient kernel: its GB/s as a fraction of the copy bandwidth
  (target >= 0.90 on the large shapes), and how many times longer
  ``dy.sum(axis=0)`` and ``ones @ dy`` take (paired by round, in one run);
* the fused act'+db pass: the unfused way's time over the fused one's
  (target >= 1.25);
* cuBLASLt's epilogues (nvmath-python): their time over gpudense's;
* the layer's forward+backward step over ``torch.nn.Linear``'s (target <= 0.95);
* one training epoch: gpudense's over PyTorch's.

``--merge-layers`` adds one ``gpudense bench --json`` document (one dtype)
to ``layers.json`` (``{"runs": {dtype: document}}``), so that a run stopped
between dtypes keeps the finished ones in one file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

TARGETS = {"copy_fraction": 0.90, "fused_speedup": 1.25, "torch_ratio": 0.95}
#: Shapes of ``dy`` counted as large for the copy-bandwidth target (at least this many bytes).
LARGE_BYTES = 64 << 20


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _f(v: Any, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def bias_section(doc: Any) -> list[str]:
    """The bias-gradient kernel against the copy and the two array-module ways.

    Example:
        >>> row = {"method": "gpudense kernel", "shape": [65536, 4096], "dtype": "float32", "median_ms": 0.25,
        ...        "gbps": 4300.0, "fraction_of_copy": 0.93, "bytes": 2**30}
        >>> other = {"method": "dy.sum(axis=0)", "shape": [65536, 4096], "dtype": "float32",
        ...          "paired_ratio_vs_kernel": 1.8}
        >>> bias_section({"copy": {"gbps": 4600.0}, "results": [row, other]})[-1]
        '| 65536x4096 | float32 | 0.2500 | 4300 | 0.93 (target >= 0.9: met) | 1.80 | - |'
    """
    out = ["## Bias gradient: gpudense kernel vs dy.sum(axis=0), ones @ dy and the copy", ""]
    if not doc or not doc.get("results"):
        return out + ["not measured (no device_check.json, or it holds no rows)"]
    copy = doc.get("copy", {}).get("gbps")
    out += [f"copy bandwidth (read + write, 1 GiB): {_f(copy, 0)} GB/s; "
            f"x: how many times longer than the kernel (paired by round)", ""]
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in doc["results"]:
        by_key.setdefault((tuple(r["shape"]), r["dtype"]), {})[r["method"]] = r
    rows = []
    for (shape, dtype), methods in by_key.items():
        k = methods.get("gpudense kernel", {})
        frac = k.get("fraction_of_copy")
        verdict = ""
        if frac is not None and k.get("bytes", 0) >= LARGE_BYTES:
            verdict = f" (target >= {TARGETS['copy_fraction']}: {'met' if frac >= TARGETS['copy_fraction'] else 'missed'})"
        rows.append(["x".join(map(str, shape)), dtype, _f(k.get("median_ms"), 4), _f(k.get("gbps"), 0),
                     _f(frac) + verdict if frac is not None else "-",
                     _f(methods.get("dy.sum(axis=0)", {}).get("paired_ratio_vs_kernel")),
                     _f(methods.get("ones @ dy (cuBLAS)", {}).get("paired_ratio_vs_kernel"))])
    return out + _table(["dy shape", "dtype", "kernel ms", "kernel GB/s", "of copy", "dy.sum x", "ones @ dy x"],
                        rows)


def fused_section(doc: Any) -> list[str]:
    """The fused act'+db pass against the unfused way, and cuBLASLt's epilogues against gpudense."""
    out = ["## Fused activation gradient + bias gradient vs unfused", ""]
    if not doc or not doc.get("fused"):
        return out + ["not measured (no fused_check.json, or it holds no rows)"]
    rows = []
    for r in doc["fused"]:
        if r["method"].startswith("unfused") and "paired_ratio_vs_kernel" in r:
            s = r["paired_ratio_vs_kernel"]
            met = "met" if s >= TARGETS["fused_speedup"] else "missed"
            rows.append(["x".join(map(str, r["shape"])), r["dtype"], r["activation"], _f(r["median_ms"], 4),
                         f"{s:.2f} (target >= {TARGETS['fused_speedup']}: {met})"])
        elif "skipped" in r:
            rows.append(["x".join(map(str, r["shape"])), r["dtype"], r.get("activation", ""), "-",
                         f"{r['method']}: {r['skipped']}"])
    out += _table(["dy shape", "dtype", "activation", "unfused ms", "unfused / fused"], rows)
    out += ["", "## cuBLASLt epilogues (nvmath-python) vs gpudense's GEMM + kernels", ""]
    eps = doc.get("epilogues") or []
    if not eps:
        return out + ["not measured (no epilogue rows: the stage was cut, or quick mode)"]
    rows = []
    for r in eps:
        if "nvmath" not in r["method"]:
            continue
        shape = "x".join(map(str, r["shape"]))
        if "skipped" in r:
            rows.append([shape, r["dtype"], r["method"], "-", f"skipped: {r['skipped']}"])
        else:
            rows.append([shape, r["dtype"], r["method"], _f(r["median_ms"], 4),
                         _f(r.get("paired_ratio_vs_gpudense"))])
    return out + _table(["batch x in x out", "dtype", "method", "ms", "cuBLASLt / gpudense"], rows)


def layers_section(doc: Any) -> list[str]:
    """The layer's forward+backward step against torch.nn.Linear, per dtype and shape."""
    out = ["## Layer forward + backward vs torch.nn.Linear", ""]
    runs = (doc or {}).get("runs") or {}
    if not runs:
        return out + ["not measured (no layers.json)"]
    rows = []
    for dtype, run in runs.items():
        for r in run.get("rows", []):
            if r.get("stage") != "step":
                continue
            ratio = r.get("ratios", {}).get("torch.step")
            verdict = ("" if ratio is None else
                       f" (target <= {TARGETS['torch_ratio']}: {'met' if ratio <= TARGETS['torch_ratio'] else 'missed'})")
            rows.append([r["shape"], f"{r['batch']}x{r['n_in']}x{r['n_out']}", dtype,
                         _f(r["stats"]["median"] * 1e3, 4), (_f(ratio) + verdict) if ratio is not None else
                         "not measured (torch)"])
    return out + _table(["shape", "batch x in x out", "dtype", "step ms", "gpudense / torch"], rows)


def train_section(doc: Any) -> list[str]:
    """One training epoch, gpudense's loop against PyTorch's."""
    out = ["## One training epoch vs the same PyTorch loop", ""]
    if not doc:
        return out + ["not measured (no train_epoch.json)"]
    head = f"{doc.get('samples', '?'):,} x {doc.get('features', '?')}, MLP {'-'.join(map(str, doc.get('sizes', [])))}"
    if "ratio_gpudense_over_torch" not in doc:
        return out + [f"{head}: gpudense {_f(doc.get('epoch_seconds'), 3)} s; torch not measured"]
    return out + _table(["data, model", "gpudense epochs s", "torch epochs s", "gpudense / torch (medians)"],
                        [[head, ", ".join(_f(v, 3) for v in doc["gpudense_epochs_s"]),
                          ", ".join(_f(v, 3) for v in doc["torch_epochs_s"]),
                          _f(doc["ratio_gpudense_over_torch"], 3)]])


def ratios_markdown(folder: Path) -> str:
    """The whole ``ratios.md`` for the files in ``folder``."""
    env = _load(folder / "environment.json") or {}
    cuda = env.get("cuda") if isinstance(env.get("cuda"), dict) else {}
    device = (cuda or {}).get("device0", {}).get("name", "unknown device")
    lines = [f"# GPU bench: ratios ({device}, commit {str(env.get('commit', 'unknown'))[:12]}, "
             f"{env.get('date_utc', 'date unknown')})", "",
             "Every ratio is measured in one run on one device (see docs/benchmarking.md for the method).", ""]
    for section in (bias_section(_load(folder / "device_check.json")),
                    fused_section(_load(folder / "fused_check.json")),
                    layers_section(_load(folder / "layers.json")),
                    train_section(_load(folder / "train_epoch.json"))):
        lines += section + [""]
    return "\n".join(lines)


def merge_layers(dest: Path, src: Path) -> dict[str, Any]:
    """Add the ``gpudense bench`` document ``src`` to ``dest`` under its dtype(s); returns the merged dict.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "one.json").write_text('{"settings": {"dtypes": ["tf32"]}, "rows": []}')
        >>> sorted(merge_layers(d / "layers.json", d / "one.json")["runs"])
        ['tf32']
    """
    doc = json.loads(src.read_text(encoding="utf-8"))
    merged = _load(dest) or {"runs": {}}
    merged["runs"][",".join(doc.get("settings", {}).get("dtypes", [])) or src.stem] = doc
    dest.write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="the run's folder: writes ratios.md there from its JSON files")
    parser.add_argument("--merge-layers", nargs=2, metavar=("LAYERS_JSON", "BENCH_JSON"),
                        help="add one gpudense bench JSON to layers.json")
    args = parser.parse_args(argv)
    if not args.out and not args.merge_layers:
        parser.error("give --out DIR or --merge-layers LAYERS_JSON BENCH_JSON")
    if args.merge_layers:
        merged = merge_layers(Path(args.merge_layers[0]), Path(args.merge_layers[1]))
        print(f"layers.json holds: {', '.join(merged['runs'])}")
    if args.out:
        text = ratios_markdown(Path(args.out))
        (Path(args.out) / "ratios.md").write_text(text, encoding="utf-8")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
