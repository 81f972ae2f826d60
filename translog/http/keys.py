"""Typed application keys shared by every HTTP module (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from translog.config import Config
from translog.log import Log
from translog.metrics import Metrics
from translog.tokens import TokenStore

LOG = web.AppKey("translog.log", Log)
CONFIG = web.AppKey("translog.config", Config)
METRICS = web.AppKey("translog.metrics", Metrics)
TOKENS = web.AppKey("translog.tokens", TokenStore)
HEALTH_CHECKS = web.AppKey("translog.health_checks", list[Callable[[], list[str]]])
"""Extra /healthz checks (e.g. object-store publication lag): each returns its problems."""
