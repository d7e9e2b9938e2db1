"""``python -m app``: the same as ``heatpose serve``."""

import sys

from app.cli import main

sys.exit(main())
