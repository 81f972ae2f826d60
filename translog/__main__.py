"""``python -m translog``."""

import sys

from translog.cli.command import main

sys.exit(main())
