"""``python -m heatpose_cli``: the ``heatpose`` console script without an install."""

import sys

from heatpose_cli import main

sys.exit(main())
