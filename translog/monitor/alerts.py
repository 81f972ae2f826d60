"""Alerts: one JSON line each, an evidence file beside it, and the sinks they go to.

An alert line is a JSON object::

    {"alert": "fork", "severity": "tampering", "log": "prod", "origin": "...", "url": "...",
     "detected_at": 1795698925824, "time": "2026-11-26T16:02:05.824Z", "message": "...",
     "evidence": "/var/lib/translog-monitor/evidence/...json", ...details}

``severity`` is ``tampering``, ``availability`` (never tampering: an unreachable log) or
``content`` (a content rule matched). Sinks: JSON lines to stdout or a file (appended, flushed
and fsynced per alert), and a webhook (POST of the line as ``application/json``, retried with
exponential backoff; lines not yet delivered are queued in the state file and retried after a
restart).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from translog.errors import TranslogError
from translog.formats.evidence import SEVERITY
from translog.formats.verify import iso_ms
from translog.monitor.store import Store


@dataclass(frozen=True)
class Alert:
    """One alert, ready to be written."""

    kind: str
    log: str
    origin: str
    url: str
    detected_at: int
    message: str
    evidence: Path | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        """``tampering``, ``availability`` or ``content``."""
        return SEVERITY[self.kind]

    def to_json(self) -> dict[str, Any]:
        """The alert as a JSON object (see the module docstring)."""
        return {
            "alert": self.kind,
            "severity": self.severity,
            "log": self.log,
            "origin": self.origin,
            "url": self.url,
            "detected_at": self.detected_at,
            "time": iso_ms(self.detected_at),
            "message": self.message,
            "evidence": None if self.evidence is None else str(self.evidence),
            **self.details,
        }

    def line(self) -> str:
        """The alert as one JSON line (no newline)."""
        return json.dumps(self.to_json(), separators=(",", ":"))


class Sink(Protocol):
    """Where alerts go."""

    async def emit(self, alert: Alert) -> None:
        """Deliver (or queue) one alert."""

    async def close(self) -> None:
        """Flush and stop."""


class StreamSink:
    """JSON lines to stdout (or any text stream)."""

    def __init__(self, stream: Any = None) -> None:
        """Write to ``stream`` (default: stdout at emit time)."""
        self._stream = stream

    async def emit(self, alert: Alert) -> None:
        """Print the line and flush."""
        stream = self._stream or sys.stdout
        stream.write(alert.line() + "\n")
        stream.flush()

    async def close(self) -> None:
        """Nothing to close."""


class FileSink:
    """JSON lines appended to a file, fsynced per alert."""

    def __init__(self, path: Path) -> None:
        """Append to ``path`` (created 0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def emit(self, alert: Alert) -> None:
        """Append the line and fsync."""
        os.write(self._fd, (alert.line() + "\n").encode())
        os.fsync(self._fd)

    async def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


class WebhookSink:
    """POST each alert line to a URL, retried with backoff; undelivered lines survive restarts."""

    def __init__(
        self, url: str, store: Store | None, *, retries: int = 5, timeout: float = 10.0
    ) -> None:
        """Deliver to ``url``; queue in ``store``'s outbox (None: in memory only)."""
        self.url = url
        self._store = store
        self._retries = retries
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._queue: asyncio.Queue[tuple[int | None, str]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.backoff_base = 0.5
        self.delivered = 0
        self.failed = 0
        if store is not None:
            for ident, line in store.outbox():
                self._queue.put_nowait((ident, line))

    async def emit(self, alert: Alert) -> None:
        """Queue the alert; a background task delivers it."""
        line = alert.line()
        ident = None
        if self._store is not None:
            with self._store.transaction():
                self._store.outbox_add(line)
            ident = self._store.outbox()[-1][0]
        self._queue.put_nowait((ident, line))
        self._start()

    def _start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._deliver_all())

    async def _deliver_all(self) -> None:
        while not self._queue.empty():
            ident, line = await self._queue.get()
            if await self._deliver(line):
                self.delivered += 1
                if ident is not None and self._store is not None:
                    with self._store.transaction():
                        self._store.outbox_done(ident)
            else:
                self.failed += 1
            self._queue.task_done()

    async def _deliver(self, line: str) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        for attempt in range(self._retries + 1):
            try:
                async with self._session.post(
                    self.url,
                    data=line.encode(),
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    why = f"http {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as e:
                why = str(e) or type(e).__name__
            if attempt < self._retries:
                await asyncio.sleep(random.uniform(0, self.backoff_base * 2**attempt))
        print(
            f"translog monitor: webhook {self.url} failed after {self._retries + 1} attempts "
            f"({why}); the alert stays queued",
            file=sys.stderr,
            flush=True,
        )
        return False

    async def flush(self) -> None:
        """Wait until every queued line was tried."""
        self._start()
        if self._worker is not None:
            await self._worker

    async def close(self) -> None:
        """Try the queue once more, then close the HTTP session."""
        await self.flush()
        if self._session is not None:
            await self._session.close()


class Reporter:
    """Turns findings into alerts: evidence file, dedupe, then every sink."""

    def __init__(self, evidence_dir: Path, sinks: Sequence[Sink], store: Store | None) -> None:
        """Write evidence under ``evidence_dir``; remember alerts in ``store`` (None: memory)."""
        self.evidence_dir = evidence_dir
        self.sinks = list(sinks)
        self._store = store
        self._seen: set[tuple[str, str, str]] = set()
        self.raised: list[Alert] = []

    def seen(self, log: str, kind: str, fingerprint: str) -> bool:
        """Whether this alert was raised already (in the state or this run)."""
        if (log, kind, fingerprint) in self._seen:
            return True
        return self._store is not None and self._store.seen_alert(log, kind, fingerprint)

    async def raise_alert(
        self,
        *,
        kind: str,
        log: str,
        origin: str,
        url: str,
        fingerprint: str,
        message: str,
        evidence: dict[str, Any] | None,
        details: dict[str, Any] | None = None,
        now: int | None = None,
    ) -> Alert | None:
        """Write the evidence and emit the alert, unless it was raised before."""
        if self.seen(log, kind, fingerprint):
            return None
        detected = now if now is not None else int(time.time() * 1000)
        path = None
        if evidence is not None:
            path = self._write_evidence(kind, origin, detected, fingerprint, evidence)
        alert = Alert(kind, log, origin, url, detected, message, path, details or {})
        self._seen.add((log, kind, fingerprint))
        if self._store is not None:
            with self._store.transaction():
                self._store.add_alert(
                    log, kind, fingerprint, detected, str(path or ""), alert.line()
                )
        self.raised.append(alert)
        for sink in self.sinks:
            await sink.emit(alert)
        return alert

    def _write_evidence(
        self, kind: str, origin: str, detected: int, fingerprint: str, obj: dict[str, Any]
    ) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", origin).strip("_") or "log"
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(detected // 1000))
        tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:8]
        path = self.evidence_dir / f"{safe}-{kind}-{stamp}-{tag}.json"
        data = json.dumps(obj, indent=1).encode() + b"\n"
        try:
            self.evidence_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            raise TranslogError(f"couldn't write evidence file {path}: {e.strerror}") from e
        return path

    async def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            await sink.close()
