"""``gpudense info``: which backend "auto" picks, why, and the versions in play."""

from __future__ import annotations

import argparse
import sys

from gpudense.backends.facts import collect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``gpudense info`` takes no options."""


def run(args: argparse.Namespace) -> int:
    facts = collect()
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    sys.stdout.flush()
    return 0
