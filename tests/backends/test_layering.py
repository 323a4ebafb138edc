"""Which modules the backends package may import: never the package face ``gpudense`` itself.

``gpudense/__init__.py`` imports the backends registry, so a backend module
that imported ``gpudense`` (the face) would depend on a half-initialised
package. Backends import the modules they use by their full names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gpudense.backends

BACKENDS = Path(gpudense.backends.__file__).resolve().parent


def _face_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name == "gpudense"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "gpudense":
            found.append(f"line {node.lineno}: from gpudense import ...")
    return found


def test_no_backend_module_imports_the_package_face():
    modules = sorted(BACKENDS.rglob("*.py"))
    assert BACKENDS / "cuda" / "loader.py" in modules  # the walk reaches the sub-packages
    bad = {str(p.relative_to(BACKENDS)): _face_imports(p) for p in modules}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_face_import_check_finds_one(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nimport gpudense\nfrom gpudense import _nvtx\nfrom gpudense._checks import x\n")
    assert _face_imports(sample) == ["line 2: import gpudense", "line 3: from gpudense import ..."]
