"""docs/testing.md names the extras that ``make test`` installs, as the Makefile sets them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_lists_the_extras_of_make_test():
    make = (ROOT / "Makefile").read_text()
    line = re.search(r"^TEST_EXTRAS \?= (.*)$", make, flags=re.M).group(1)
    always = set(re.sub(r"\$\(if .*", "", line).strip(",").split(","))
    linux = set(re.findall(r"\$\(comma\)(\w+)", line))
    assert always >= {"test"} and linux, line
    page = (ROOT / "docs" / "testing.md").read_text()
    sentence = re.search(r"`make test` installs .*?, so that", page, flags=re.S).group(0)
    named = set(re.findall(r"`(\w+)`", sentence)) - {"make", "test", "TEST_EXTRAS", "mpiexec"} | (
        {"test"} if "`test`" in sentence else set())
    assert named == always | linux, (named, always | linux)
