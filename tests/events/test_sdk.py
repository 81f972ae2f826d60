"""The SDK and the logging handler produce events a log with [events] enabled accepts."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from tests.events.helpers import events_config
from tests.integration.logservers import ThreadedServer
from translog.client import SyncLogClient
from translog.client.handler import TranslogHandler
from translog.core.signing import NoteSigner
from translog.errors import EventError
from translog.formats.event_builder import build_event
from translog.formats.event_schema import parse_event
from translog.http.app import make_app
from translog.log.tokens import TokenStore
from translog.storage.memory import MemoryStorage


def _server() -> tuple[ThreadedServer, NoteSigner, str]:
    signer = NoteSigner.generate("events.example/log")
    tokens = TokenStore()
    token = tokens.create("app", ("submit", "read"))
    app = make_app(events_config(), storage=MemoryStorage(), signer=signer, tokens=tokens)
    return ThreadedServer(app).start(), signer, token


def test_handler_and_client_events_are_accepted(tmp_path: Path) -> None:
    server, signer, token = _server()
    logger = logging.getLogger(f"test.events.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = TranslogHandler(
        server.url,
        signer.vkey,
        token,
        spool_dir=tmp_path / "spool",
        flush_interval=0.02,
        tenant="acme",
        service="billing-api",
    )
    logger.addHandler(handler)
    try:
        logger.info("started")
        logger.warning(
            "login failed for %s",
            "alice",
            extra={
                "audit": {
                    "action": "user.login",
                    "actor": ("user", "alice"),
                    "category": "authentication",
                    "outcome": "failure",
                    "reason": "bad password",
                    "source_ip": "192.0.2.7",
                    "attempt": 3,
                }
            },
        )
        logger.info("bad", extra={"audit": {"action": "NotDotted"}})  # refused locally
        assert handler.settle(10)
        assert handler.sent == 2
        with SyncLogClient(server.url, signer.vkey, token=token, read_token=token) as client:
            receipt = client.submit_event(
                build_event(
                    "role.grant",
                    actor=("user", "root"),
                    category="authorization",
                    tenant="acme",
                    service="iam",
                    targets=[("user", "bob")],
                )
            )
            assert receipt.entries[0].index == 2
            no_tenant = build_event(
                "a.b", actor=("user", "x"), category="system", tenant="t", service="s"
            )
            del no_tenant["tenant"]
            with pytest.raises(EventError, match=r"event\.tenant: missing"):
                client.submit_event(no_tenant)
            assert server.log.size == 3
        events = [parse_event(e.payload or b"") for e in server.log.entries(0, 3)]
    finally:
        logger.removeHandler(handler)
        handler.close()
        server.stop()
    started, failed, grant = events
    assert started["action"] == "log.info" and started["actor"] == {
        "type": "service",
        "id": "billing-api",
    }
    assert failed["action"] == "user.login" and failed["outcome"] == {
        "result": "failure",
        "reason": "bad password",
    }
    assert failed["source"] == {"ip": "192.0.2.7"}
    assert failed["details"]["attempt"] == 3 and failed["details"]["level"] == "WARNING"
    assert grant["targets"] == [{"type": "user", "id": "bob"}]
