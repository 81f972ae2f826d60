"""Shared helpers for the audit-event tests: an app with events on, event generation, checks."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from translog.config import Config, EventsSection, LogSection, PublisherSection
from translog.core.checkpoint import open_checkpoint
from translog.core.leaf import decode_leaf
from translog.core.merkle import leaf_hash, verify_inclusion
from translog.core.signing import NoteSigner
from translog.core.vkey import parse_vkey
from translog.formats.event_builder import build_event, encode_event
from translog.http.app import make_app
from translog.http.keys import LOG, TOKENS
from translog.log.sequencer import Log
from translog.log.tokens import TokenStore
from translog.storage.base import Storage
from translog.storage.memory import MemoryStorage

ORIGIN = "events.example/log"
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
ACTORS = ["alice", "bob", "carol", "dave"]
ACTIONS = ["user.login", "user.logout", "role.grant", "config.update"]


@dataclass
class EventsEnv:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    log: Log
    signer: NoteSigner
    tokens: TokenStore
    sent: list[dict[str, Any]] = field(default_factory=list)

    def auth(self, *tenants: str, scopes: tuple[str, ...] = ("read",)) -> dict[str, str]:
        name = "t" + str(len(self.tokens.list()))
        token = self.tokens.create(name, scopes, tenants=tenants)
        return {"Authorization": "Bearer " + token}


def events_config(**events: Any) -> Config:
    return Config(
        log=LogSection(origin=ORIGIN),
        publisher=PublisherSection(interval_ms=60_000),
        events=EventsSection(enabled=True, **events),
    )


async def start_events(
    aiohttp_client: ClientFactory, storage: Storage | None = None, **events: Any
) -> EventsEnv:
    config = events_config(**events)
    signer = NoteSigner.generate(ORIGIN)
    tokens = TokenStore()
    app = make_app(config, storage=storage or MemoryStorage(), signer=signer, tokens=tokens)
    client = await aiohttp_client(app)
    return EventsEnv(client, app, app[LOG], signer, app[TOKENS])


def make_events(n: int, seed: int = 7, time0: int = 1_790_000_000_000) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        action = rng.choice(ACTIONS)
        out.append(
            build_event(
                action,
                actor=("user", rng.choice(ACTORS)),
                category="authentication" if action.startswith("user.") else "configuration",
                tenant=rng.choice(["acme", "acme", "globex"]),
                service="sso",
                outcome=rng.choice(["success", "success", "failure"]),
                targets=[("application", rng.choice(["billing", "crm"]))],
                event_id=f"ev-{seed}-{i}",
                time_ms=time0 + i,
            )
        )
    return out


async def submit_events(env: EventsEnv, events: list[dict[str, Any]]) -> None:
    token = env.auth(scopes=("submit",))
    body = b"\n".join(b'"' + base64.b64encode(encode_event(e)) + b'"' for e in events)
    resp = await env.client.post(
        "/add-batch", data=body, headers={**token, "Content-Type": "application/x-ndjson"}
    )
    assert resp.status == 200, await resp.text()
    env.sent += events


def verify_result(result: dict[str, Any], note: str, vkey: str) -> None:
    """Check one search result the way an auditor would: proof, checkpoint, commitment."""
    cp, _, _ = open_checkpoint(note.encode(), parse_vkey(vkey), origin=ORIGIN)
    leaf = base64.b64decode(result["leaf"])
    proof = [base64.b64decode(h) for h in result["inclusion_proof"]]
    verify_inclusion(leaf_hash(leaf), result["index"], cp.size, proof, cp.root_hash)
    if result["status"] == "present":
        payload = base64.b64decode(result["payload"])
        salt = base64.b64decode(result["salt"])
        decoded = decode_leaf(leaf)
        assert decoded.commitment == hashlib.sha256(salt + payload).digest()
