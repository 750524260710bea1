"""``python -m esdsnn`` is the ``esdsnn`` command."""

import sys

from esdsnn.cli import main

sys.exit(main())
