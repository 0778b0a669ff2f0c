"""Entry point for ``python -m consumer``."""

import sys

from consumer.cli import main

sys.exit(main())
