"""``python -m training.synthetic``: the command line of ``heatpose synth``
(:mod:`heatpose_cli.synth`)."""

import sys

from heatpose_cli.synth import main

sys.exit(main())
