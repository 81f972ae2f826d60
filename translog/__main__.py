"""``python -m translog``."""

import sys

from translog.cli.main import main

sys.exit(main())
