"""The multi-process server: one hub process owns the log, workers serve HTTP."""
