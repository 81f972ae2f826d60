"""Self-audit: the log records reads of its payloads, searches and admin actions as events.

Events are ``translog.event/v1`` in the tenant ``events.self_tenant`` (default ``translog``),
service ``translog``, actor ``{type: "token", id: <token name>}`` (or ``{type: "operator",
id: <OS user>}`` for offline CLI actions). Actions:

===============================  ===============  =============================================
action                           category         when
===============================  ===============  =============================================
``translog.payload.read``        data_access      payloads read through ``/entries`` (grouped:
                                                  one event per token per flush, listing indexes)
``translog.events.search``       data_access      every search and every ``/events/<index>`` read
``translog.erasure.entry``       admin            an entry's payload erased (who, why, leaf hash)
``translog.erasure.subject``     admin            every entry naming a subject erased
``translog.retention.sweep``     admin            payloads erased past their retention
``translog.hold.set``/``.release``  admin         legal holds
``translog.token.create``/``.revoke``  admin      token changes (``translog token``)
``translog.index.rebuild``       admin            ``translog reindex``
===============================  ===============  =============================================

Reads are grouped because an export reads thousands of payloads: :class:`SelfAudit` collects
them and :meth:`SelfAudit.drain` turns them into one event per token, at most once per flush
interval. Everything else becomes an event at once. Pure: the HTTP layer submits the payloads.
"""

from __future__ import annotations

import getpass
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from translog.formats.event_builder import build_event, encode_event

SERVICE = "translog"
MAX_READ_INDEXES = 2000
"""Indexes listed in one read event (as ranges); more go into the next event."""
SPOOL_NAME = "admin-events.ndjson"
"""Offline CLI admin actions wait here (0600) until the server sequences them."""


def ranges(indexes: Iterable[int]) -> list[list[int]]:
    """Sorted ``[first, last]`` runs of consecutive indexes."""
    out: list[list[int]] = []
    for i in sorted(set(indexes)):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def admin_event(
    action: str,
    actor: tuple[str, str],
    *,
    tenant: str,
    details: Mapping[str, Any],
    targets: Sequence[tuple[str, str]] = (),
    outcome: str = "success",
    reason: str | None = None,
    category: str = "admin",
) -> bytes:
    """One self-audit event's payload."""
    event = build_event(
        action,
        actor=actor,
        category=category,
        tenant=tenant,
        service=SERVICE,
        outcome=outcome,
        reason=reason,
        targets=targets,
        details=details,
    )
    return encode_event(event)


class SelfAudit:
    """Collects self-audit events for the server to submit (thread-safe)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self._lock = threading.Lock()
        self._reads: dict[str, set[int]] = {}
        self._ready: list[bytes] = []

    def read(self, token: str, index: int) -> None:
        """Note that ``token`` read the payload of entry ``index``."""
        with self._lock:
            self._reads.setdefault(token, set()).add(index)

    def record(
        self,
        action: str,
        token: str,
        details: Mapping[str, Any],
        *,
        targets: Sequence[tuple[str, str]] = (),
        category: str = "admin",
        outcome: str = "success",
        reason: str | None = None,
    ) -> bytes:
        """Queue an event by ``token`` now; returns its payload."""
        payload = admin_event(
            action,
            ("token", token),
            tenant=self.tenant,
            details=details,
            targets=targets,
            category=category,
            outcome=outcome,
            reason=reason,
        )
        with self._lock:
            self._ready.append(payload)
        return payload

    def drain(self) -> list[bytes]:
        """Every queued event, read groups included; the queue is emptied."""
        with self._lock:
            reads, self._reads = self._reads, {}
            ready, self._ready = self._ready, []
        for token, indexes in sorted(reads.items()):
            runs = ranges(indexes)
            for k in range(0, len(runs), MAX_READ_INDEXES):
                chunk = runs[k : k + MAX_READ_INDEXES]
                ready.append(
                    admin_event(
                        "translog.payload.read",
                        ("token", token),
                        tenant=self.tenant,
                        category="data_access",
                        details={
                            "entries": chunk,
                            "count": sum(b - a + 1 for a, b in chunk),
                        },
                    )
                )
        return ready


def operator() -> str:
    """The OS user running an offline admin command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def spool_admin_event(data_dir: Path, payload: bytes) -> None:
    """Append an offline admin action to ``DATA/admin-events.ndjson`` (0600, fsynced).

    The server sequences the spool when it starts and on every publication tick.
    """
    path = data_dir / SPOOL_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, payload + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def take_spool(data_dir: Path) -> tuple[Path | None, list[bytes]]:
    """Claim the spooled admin events: rename the file aside and read it.

    Returns the claimed file (delete it once the events are durable) and its events. A claimed
    file left by a crash is taken again first, so nothing is lost (at worst sequenced twice).
    """
    path = data_dir / SPOOL_NAME
    claimed = data_dir / (SPOOL_NAME + ".claimed")
    if not claimed.exists():
        if not path.exists():
            return None, []
        os.replace(path, claimed)
    lines = [line for line in claimed.read_bytes().splitlines() if line.strip()]
    valid = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            continue  # a torn final line from a crash mid-write
        valid.append(line)
    return claimed, valid


def now_ms() -> int:
    """UTC ms since the epoch."""
    return time.time_ns() // 1_000_000
