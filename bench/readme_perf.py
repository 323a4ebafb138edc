"""The README's GPU rows, written from the committed GPU results (bench/results/gpu-*/), or "not measured".

    python3 bench/readme_perf.py            # print the rows
    python3 bench/readme_perf.py --write    # put them into README.md, between its two markers
    python3 bench/readme_perf.py --check    # exit status 1 if README.md's rows differ from these

Each row takes the newest folder ``bench/results/gpu-*/`` (by name, which
carries the date) that holds the file it reads, unchanged as
bench/gpu_validation.sh wrote it: ``pytest-gpu.xml`` (check), then
``device_check.json``, ``fused_check.json``, ``layers.json`` and
``train_epoch.json`` (bench). Where no such file is committed the row says
"not measured" (or "not run"), so the README never shows a GPU figure that
no committed raw result holds. A test keeps README.md in step with this
script.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
BEGIN = "<!-- gpu rows: written by bench/readme_perf.py from bench/results/gpu-*/; do not edit by hand -->"
END = "<!-- end of gpu rows -->"
LAYER_DTYPES = ("float32", "tf32", "float16", "bfloat16")


def newest_with(results: Path, name: str) -> Path | None:
    """The file ``name`` in the newest ``results/gpu-*/`` folder that has it, or None.

    Example:
        >>> newest_with(Path("/nonexistent"), "device_check.json") is None
        True
    """
    found = sorted(results.glob(f"gpu-*/{name}"), key=lambda p: p.parent.name)
    return found[-1] if found else None


def _range(values: list[float], unit: str = "x") -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}{unit}" if abs(hi - lo) < 0.005 else f"{lo:.2f}-{hi:.2f}{unit}"


def junit_summary(path: Path) -> str:
    """``"N passed, F failed, E errors, S skipped"`` from a JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"


def bias_value(doc: dict[str, Any], dtype: str) -> str | None:
    """The kernel's fraction of the copy bandwidth on the largest ``dy`` of ``dtype``."""
    rows = [r for r in doc.get("results", []) if r["method"] == "gpudense kernel" and r["dtype"] == dtype
            and "skipped" not in r]
    if not rows:
        return None
    r = max(rows, key=lambda r: r["bytes"])
    return f"{r['fraction_of_copy']:.2f} ({r['gbps']:.0f} GB/s, dy {'x'.join(map(str, r['shape']))})"


def fused_value(doc: dict[str, Any], activation: str) -> str | None:
    """Unfused time over fused time, over the shapes and dtypes measured for ``activation``."""
    ratios = [r["paired_ratio_vs_kernel"] for r in doc.get("fused", [])
              if r.get("activation") == activation and "paired_ratio_vs_kernel" in r]
    return _range(ratios) if ratios else None


def layers_value(doc: dict[str, Any], dtype: str) -> str | None:
    """gpudense's step time over torch.nn.Linear's, over the shapes measured in ``dtype``."""
    run = doc.get("runs", {}).get(dtype, {})
    ratios = [r["ratios"]["torch.step"] for r in run.get("rows", [])
              if r.get("stage") == "step" and "torch.step" in r.get("ratios", {})]
    return _range(ratios) if ratios else None


def train_value(doc: dict[str, Any]) -> str | None:
    """gpudense's epoch time over PyTorch's (medians)."""
    ratio = doc.get("ratio_gpudense_over_torch")
    return None if ratio is None else f"{ratio:.2f}x"


def rows(results: Path = RESULTS) -> list[list[str]]:
    """``[figure, value, target, source]`` per README row.

    Example:
        >>> rows(Path("/nonexistent"))[0]
        ['GPU tests (all marked gpu)', 'not run', 'all pass', '-']
    """
    out: list[list[str]] = []

    def add(figure: str, target: str, name: str, value: Callable[[Any], str | None], xml: bool = False) -> None:
        path = newest_with(results, name)
        got = None
        if path is not None:
            got = value(path) if xml else value(json.loads(path.read_text(encoding="utf-8")))
        source = path.relative_to(results.parent.parent).as_posix() if path is not None and got else "-"
        out.append([figure, got or ("not run" if xml else "not measured"), target, source])

    add("GPU tests (all marked gpu)", "all pass", "pytest-gpu.xml", junit_summary, xml=True)
    for dtype in ("float32", "bfloat16"):
        add(f"bias-gradient kernel, {dtype}: fraction of copy bandwidth", ">= 0.90", "device_check.json",
            lambda d, dtype=dtype: bias_value(d, dtype))
    for act in ("relu", "gelu", "tanh"):
        add(f"fused {act}'+db pass: unfused time / fused time", ">= 1.25", "fused_check.json",
            lambda d, act=act: fused_value(d, act))
    for dtype in LAYER_DTYPES:
        add(f"layer forward+backward, {dtype}: gpudense / torch.nn.Linear", "<= 0.95", "layers.json",
            lambda d, dtype=dtype: layers_value(d, dtype))
    add("training epoch 1,000,000 x 784: gpudense / PyTorch", "<= 1.00", "train_epoch.json", train_value)
    return out


def block(results: Path = RESULTS) -> str:
    """The README's generated block, markers included."""
    lines = [BEGIN, "| GPU figure | measured | target | raw result |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    return "\n".join([*lines, END])


def replace_block(text: str, new: str) -> str:
    """``text`` with its block between the markers replaced by ``new``.

    Raises:
        ValueError: the markers are missing or out of order.

    Example:
        >>> replace_block(f"a\\n{BEGIN}\\nold\\n{END}\\nb", "NEW")
        'a\\nNEW\\nb'
    """
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"README.md must hold the markers {BEGIN!r} and {END!r}, in that order")
    return text[:i] + new + text[j + len(END):]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the rows into README.md")
    mode.add_argument("--check", action="store_true", help="exit status 1 if README.md's rows are not these")
    args = parser.parse_args(argv)
    new = block()
    text = README.read_text(encoding="utf-8")
    if args.write:
        README.write_text(replace_block(text, new), encoding="utf-8")
    elif args.check:
        if replace_block(text, new) != text:
            print("README.md's GPU rows differ from bench/readme_perf.py's: run it with --write", file=sys.stderr)
            return 1
    else:
        print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
