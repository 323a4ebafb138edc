"""Every ``python`` code block of the README runs when pasted alone into a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)
#: What a block needs beyond gpudense's own dependencies: the package, and the word in the block that needs it.
NEEDS = {"sklearn": ("load_digits", "gpudense train")}


def test_the_readme_has_code_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_block_runs_alone(index, tmp_path):
    block = BLOCKS[index]
    for package, words in NEEDS.items():
        if any(word in block for word in words):
            pytest.importorskip(package, reason=f"README block {index + 1} needs {package} (the train extra)")
    env = dict(os.environ, GPUDENSE_BACKEND="numpy")  # the same blocks on a machine with or without a GPU
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"README block {index + 1} failed alone:\n{block}\n{done.stderr[-3000:]}"
