"""``server.event_loop``: ``translog serve`` runs on uvloop when asked for, else asyncio's loop."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from translog.config import parse_config
from translog.errors import ConfigError
from translog.http.app import run_event_loop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default_and_runs_on_libuv() -> None:
    config = parse_config('[log]\norigin = "x.example/log"\n', source="test")
    assert config.server.event_loop == "uvloop"
    assert run_event_loop(_loop_type(), "uvloop") is uvloop.Loop


def test_asyncio_runs_on_asyncio_s_own_loop() -> None:
    loop = run_event_loop(_loop_type(), "asyncio")
    assert loop is not uvloop.Loop
    assert issubclass(loop, asyncio.BaseEventLoop)


def test_an_unknown_event_loop_is_a_config_error_naming_the_key() -> None:
    text = '[log]\norigin = "x.example/log"\n[server]\nevent_loop = "trio"\n'
    with pytest.raises(ConfigError, match=r"server\.event_loop"):
        parse_config(text, source="test")
