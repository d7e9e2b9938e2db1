"""``python -m app``: the same as ``heatpose serve`` (an entry point kept for deploy files and
benchmarks; the command line itself is :mod:`heatpose_cli.serve`)."""

import sys

from heatpose_cli.serve import main

sys.exit(main())
