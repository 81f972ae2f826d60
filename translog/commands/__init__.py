"""Sub-commands of roles other than the log, each a module with ``register(sub)``.

They sit at the top layer beside :mod:`translog.cli` (which lists them in
``COMMAND_MODULES``): they wire servers and clients together, so they may import anything.
"""
