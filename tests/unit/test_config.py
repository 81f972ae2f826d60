"""Config loading: the example file is complete and valid, and bad input names the key."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translog.config import Config, format_config, load_config, parse_config
from translog.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"


def test_example_is_valid_and_lists_every_key() -> None:
    config = load_config(EXAMPLE)
    text = EXAMPLE.read_text()
    for section in dataclasses.fields(Config):
        assert f"[{section.name}]" in text
        for f in dataclasses.fields(getattr(config, section.name)):
            assert f"\n{f.name} = " in text, f"{section.name}.{f.name} missing from example.toml"


def test_round_trip() -> None:
    config = load_config(EXAMPLE)
    assert parse_config(format_config(config)) == config


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[log]\norigin = "a"\nbogus = 1\n', "log.bogus"),
        ('[log]\norigin = "a"\n[sequencer]\nmax_pending = "many"\n', "sequencer.max_pending"),
        ('[log]\norigin = "a"\n[sequencer]\nmax_pending = 0\n', "sequencer.max_pending"),
        ('[log]\norigin = "a"\n[server]\npublic_tree = 1\n', "server.public_tree"),
        ('[log]\norigin = "has space"\n', "log.origin"),
        ("[log]\n", "log.origin"),
        ('[log]\norigin = "a"\n[server]\ndefault_kind = "x"\n', "server.default_kind"),
        ('[log]\norigin = "a"\n[sequencer]\nmax_batch_age_ms = 500\n', "max_batch_age_ms"),
        ('[log]\norigin = "a"\n[nope]\nx = 1\n', "nope"),
        ("not toml at all [", "invalid TOML"),
    ],
)
def test_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(text)


@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text)
