"""Retention periods: presets and parsing. Pure.

A retention period is the *minimum* time an event's payload is kept. Once an entry's leaf
timestamp is older than its period, the retention sweep erases its payload and salt (the leaf
and every hash stay, so proofs keep verifying). Years count as 366 days, so a period is never
shorter than the regulation asks.
"""

from __future__ import annotations

import re

from translog.errors import ConfigError

DAY_MS = 86_400_000

PRESETS: dict[str, int | None] = {
    "soc2": 366,  # SOC 2: one year of audit evidence
    "pci_dss": 366,  # PCI DSS 10.5.1: at least one year of audit trail history
    "hipaa": 6 * 366,  # HIPAA 164.316(b)(2): six years
    "forever": None,
}
"""Preset name → days kept (None: never erased by retention)."""

_DAYS = re.compile(r"([1-9][0-9]{0,5})d")


def parse_retention(text: str, key: str = "retention") -> int | None:
    """Milliseconds an entry is kept under ``text`` (None: forever); ConfigError names ``key``."""
    if text in PRESETS:
        days = PRESETS[text]
        return None if days is None else days * DAY_MS
    m = _DAYS.fullmatch(text)
    if m is None:
        raise ConfigError(
            f'{key}: expected {", ".join(PRESETS)} or a number of days such as "400d", got {text!r}'
        )
    return int(m.group(1)) * DAY_MS
