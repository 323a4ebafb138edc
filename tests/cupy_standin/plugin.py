"""``pytest -p cupy_standin.plugin``: the whole session runs with the stand-in as ``cupy``.

The GPU tests (marker ``gpu``) then run on it: tests/conftest.py asks the
CuPy backend whether it can run, and on the stand-in it can.
"""

from __future__ import annotations


def pytest_configure(config):
    import cupy_standin

    cupy_standin.install()
