"""``python -m edge_had``: the ``edge-had`` command line without the installed entry point."""

import sys

from edge_had.cli import main

sys.exit(main())
