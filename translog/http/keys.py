"""Typed application keys shared by every HTTP module (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from translog.config import Config
from translog.log.requests import Submitter
from translog.log.sequencer import Log
from translog.log.submission import Submissions
from translog.log.tokens import TokenStore
from translog.metrics import Metrics

LOG = web.AppKey("translog.log.sequencer", Log)
CONFIG = web.AppKey("translog.config", Config)
METRICS = web.AppKey("translog.metrics", Metrics)
TOKENS = web.AppKey("translog.log.tokens", TokenStore)
SUBMISSIONS = web.AppKey("translog.submissions", Submissions)
"""The log's submission API (in the process that owns the log)."""
SUBMITTER: web.AppKey[Submitter] = web.AppKey("translog.submitter")
"""Who answers ``/add`` and ``/add-batch``: the log's ``Submissions``, or a worker's fast path."""
HEALTH_CHECKS = web.AppKey("translog.health_checks", list[Callable[[], list[str]]])
"""Extra /healthz checks (e.g. object-store publication lag): each returns its problems."""
