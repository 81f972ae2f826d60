"""``python -m translog``."""

import sys

from translog.cli import main

sys.exit(main())
