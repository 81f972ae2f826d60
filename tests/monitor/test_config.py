"""The monitor config: the example parses, errors name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from translog.errors import ConfigError
from translog.monitor.config import load_monitor_config, parse_monitor_config

EXAMPLE = Path(__file__).parents[2] / "config" / "monitor.example.toml"
VKEY = "a.example/log+7ffffb9e+AQT7NmlZIo2wsGPac/KvVONm1TvcUZ5bAp7cVHq/D8zB"


def test_example_parses() -> None:
    text = EXAMPLE.read_text().replace("audit.example.com/prod+1c2d3e4f+AQ...", VKEY)
    cfg = parse_monitor_config(text, base=Path("/etc/mon"))
    assert cfg.state == Path("/etc/mon/monitor-state.sqlite")
    assert [r.name for r in cfg.rules] == ["failed-logins", "admin-role-change"]
    assert cfg.logs[0].origin == "a.example/log"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one"),
        ('[[log]]\nurl = "http://x"\nvkey = "V"\nbogus = 1\n', "log[0].bogus: unknown key"),
        ('[[log]]\nurl = "ftp://x"\nvkey = "V"\n', "log[0].url"),
        ('[[log]]\nurl = "http://x"\nvkey = "nope"\n', "log[0].vkey"),
        ('[[log]]\nurl = "http://x"\nvkey = "V"\ninterval_seconds = 0\n', "must be positive"),
        ('[[log]]\nurl = "http://x"\nvkey = "V"\n[[rule]]\nname = "r"\n', "rule[0].match"),
        (
            '[[log]]\nurl = "http://x"\nvkey = "V"\n[[rule]]\nname = "r"\nmatch = {a = 1}\n'
            "threshold = 3\n",
            "positive window",
        ),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_monitor_config(text.replace('"V"', f'"{VKEY}"'), base=Path("."))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="couldn't read"):
        load_monitor_config("/nonexistent/monitor.toml")
