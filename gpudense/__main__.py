"""``python -m gpudense``: the same command line as the ``gpudense`` script."""

import sys

from gpudense.cli import main

sys.exit(main())
