"""Typed application keys shared by every HTTP module (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from aiohttp import web

from translog.config import Config
from translog.log import Log
from translog.metrics import Metrics
from translog.tokens import TokenStore

LOG = web.AppKey("translog.log", Log)
CONFIG = web.AppKey("translog.config", Config)
METRICS = web.AppKey("translog.metrics", Metrics)
TOKENS = web.AppKey("translog.tokens", TokenStore)
