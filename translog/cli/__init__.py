"""The ``translog`` command line: every command, with its shared helpers public inside the package.

:func:`main` is the console entry point (``translog = "translog.cli:main"``).
"""

from translog.cli.command import main as main

__all__ = ["main"]
