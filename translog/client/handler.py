"""A ``logging.Handler`` that sends audit events to a translog log without blocking the caller.

Usage::

    handler = TranslogHandler(url, vkey, token, spool_dir="/var/spool/myapp-audit")
    logging.getLogger("audit").addHandler(handler)
    logging.getLogger("audit").info("user %s logged in", user, extra={"audit": {"user": user}})

**Event format.** Each record becomes one payload, compact JSON with sorted keys (UTF-8)::

    {"audit": {...}, "event_id": "<uuid4 hex>", "level": "INFO", "logger": "audit",
     "message": "user alice logged in", "time": 1764150000000}

``time`` is the record's creation time in ms since the epoch; ``audit`` is present only when
the record was logged with ``extra={"audit": {...}}`` (values JSON cannot hold become strings),
and ``exception`` holds the formatted traceback when the record carries one. ``event_id``
doubles as the idempotency key.

**Audit events.** With ``tenant=`` and ``service=``, each record becomes a validated
``translog.event/v1`` event instead (docs/EVENTS.md,
:func:`translog.formats.event_builder.event_from_record`), which a log with ``[events] enabled``
requires: ``extra={"audit": {"action": "user.login", "actor": ("user", "alice"),
"category": "authentication", "outcome": "failure"}}``. A record that cannot make a valid event
is reported through ``logging``'s ``handleError`` and not sent.

**Delivery.** ``emit`` only builds the event and puts it on a bounded in-memory queue. A
background thread takes up to ``batch_size`` events (or what arrived within
``flush_interval``) and sends them with :meth:`SyncLogClient.submit_batch`, one idempotency key
per event, so re-sending a batch after a failure or a crash never adds an entry twice.

**Spool.** When the log cannot be reached (or refuses with 5xx, 429, 401, 403, or an answer
that does not verify), the batch is appended to an on-disk spool: append-only JSONL segments in
``spool_dir``, fsync'd, at most ``max_spool_bytes`` in total. While the spool holds events, new
events go to the spool too, and the thread drains it oldest-first once the log answers again, so
order is kept (events that overflow the queue, below, are the exception: they go ahead). When
the queue is full, ``emit`` writes the event straight to the spool; when the spool is full too,
the event is dropped, counted and reported on stderr. An event the log rejects as malformed or
too large (400/413) is dropped the same way, so it cannot block the events behind it. ``emit``
never raises and never waits on the network.

**Shutdown.** ``flush(timeout)`` waits until every event emitted before the call is in the log
or in the spool; ``settle(timeout)`` does the same and says whether it happened in time.
``close()`` flushes (bounded by ``close_timeout``), stops the thread and closes the client; it
is registered with ``atexit``. A spool left behind is drained by the next handler that uses the
same ``spool_dir``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from translog.client import SyncLogClient
from translog.errors import MalformedError, TranslogError, VerificationError
from translog.formats.event_builder import encode_event, event_from_record

__all__ = ["TranslogHandler"]

_SEGMENT_PREFIX = "spool-"
_SEGMENT_SUFFIX = ".jsonl"
_WARN_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class _Event:
    """One audit event: its idempotency key and its payload (JSON bytes)."""

    key: str
    payload: bytes


class _Flush:
    """A flush marker on the queue: set once every event before it is sent or spooled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Stop:
    """Tells the background thread to settle what it has and exit."""


_Item = _Event | _Flush | _Stop


class _Spool:
    """Append-only JSONL segments in one directory, bounded in total bytes. Thread-safe.

    Each line is ``{"key": ..., "payload": <payload text>}``. Segments are named
    ``spool-<sequence>.jsonl``; the newest one takes appends until the drainer seals it.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        existing = self.segments()
        self._bytes = sum(p.stat().st_size for p in existing)
        self._next = 1 + max((self._number(p) for p in existing), default=0)
        self._active: Path | None = None

    @property
    def size(self) -> int:
        """Bytes currently spooled."""
        return self._bytes

    @staticmethod
    def _number(path: Path) -> int:
        return int(path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)])

    def segments(self) -> list[Path]:
        """Spool segments, oldest first."""
        paths = self.directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}")
        return sorted((p for p in paths if self._valid_name(p)), key=self._number)

    @staticmethod
    def _valid_name(path: Path) -> bool:
        middle = path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
        return middle.isdigit()

    def append(self, events: Sequence[_Event]) -> int:
        """Append as many events as fit (in order), fsync'd; return how many were written."""
        lines: list[bytes] = []
        with self._lock:
            room = self.max_bytes - self._bytes
            for event in events:
                line = _spool_line(event)
                if len(line) > room:
                    break
                lines.append(line)
                room -= len(line)
            if lines:
                self._write(b"".join(lines))
        return len(lines)

    def _write(self, data: bytes) -> None:
        """Append ``data`` to the active segment (opening a new one if needed) and fsync."""
        created = self._active is None
        if self._active is None:
            self._active = self.directory / f"{_SEGMENT_PREFIX}{self._next:020d}{_SEGMENT_SUFFIX}"
            self._next += 1
        fd = os.open(self._active, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._bytes += len(data)
        if created:
            _fsync_dir(self.directory)

    def seal(self, segment: Path) -> None:
        """Stop appending to ``segment`` if it is the active one (the drainer reads it next)."""
        with self._lock:
            if self._active == segment:
                self._active = None

    def read(self, segment: Path) -> list[_Event]:
        """The events in a sealed segment; a torn last line (a crash mid-write) is skipped."""
        events: list[_Event] = []
        for n, line in enumerate(segment.read_bytes().splitlines(), 1):
            try:
                obj = json.loads(line)
                events.append(_Event(obj["key"], obj["payload"].encode("utf-8")))
            except (ValueError, KeyError, TypeError, AttributeError):
                _warn(f"skipping unreadable line {n} of spool segment {segment.name}")
        return events

    def remove(self, segment: Path) -> None:
        """Delete a drained segment."""
        with self._lock:
            size = segment.stat().st_size
            segment.unlink()
            self._bytes -= size


def _spool_line(event: _Event) -> bytes:
    obj = {"key": event.key, "payload": event.payload.decode("utf-8")}
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _warn(message: str) -> None:
    """Report on stderr (never through logging: this handler may be attached to the root)."""
    print(f"translog handler: {message}", file=sys.stderr, flush=True)


class TranslogHandler(logging.Handler):
    """Send log records to a translog log as audit events (see the module docstring).

    Counters: :attr:`sent` (events confirmed in the log), :attr:`spooled` (events written to
    the spool), :attr:`dropped` (events lost: spool full, or rejected by the log).
    """

    def __init__(
        self,
        url: str,
        vkey: str,
        token: str,
        *,
        spool_dir: str | Path,
        max_spool_bytes: int = 64 << 20,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        kind: str | None = None,
        queue_size: int = 10_000,
        max_retry_interval: float = 30.0,
        close_timeout: float = 10.0,
        state_path: str | Path | None = None,
        timeout: float = 10.0,
        level: int = logging.NOTSET,
        tenant: str | None = None,
        service: str | None = None,
    ) -> None:
        """Create the handler and start its background thread.

        ``kind`` is passed to the log (``committed``/``inline``). While the log is down the
        spool is retried every ``flush_interval``, backing off to ``max_retry_interval``.
        ``state_path`` is the client's checkpoint state file (default: in memory only).
        """
        super().__init__(level)
        if (tenant is None) != (service is None):
            raise ValueError("give both tenant and service for audit events, or neither")
        self._tenant = tenant
        self._service = service
        if batch_size < 1 or flush_interval <= 0 or max_spool_bytes < 0 or queue_size < 1:
            raise ValueError("batch_size, flush_interval and queue_size must be positive")
        self.url = url
        self._vkey = vkey
        self._token = token
        self._state_path = state_path
        self._timeout = timeout
        self._spool = _Spool(Path(spool_dir), max_spool_bytes)
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_retry = max(max_retry_interval, flush_interval)
        self._retry_delay = flush_interval
        self._retry_at = 0.0
        self._kind = kind
        self._close_timeout = close_timeout
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self._counts_lock = threading.Lock()
        self.sent = 0
        self.spooled = 0
        self.dropped = 0
        self._last_warning: dict[str, float] = {}
        self._progress: dict[Path, int] = {}
        self._client: SyncLogClient | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="translog-handler", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the caller's side ---------------------------------------------------------------

    @property
    def spool_bytes(self) -> int:
        """Bytes currently waiting in the spool."""
        return self._spool.size

    def stats(self) -> dict[str, int]:
        """The counters and the spool size, as a dict."""
        return {
            "sent": self.sent,
            "spooled": self.spooled,
            "dropped": self.dropped,
            "spool_bytes": self._spool.size,
        }

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record as an audit event; never blocks on the network, never raises."""
        if self._own_thread():
            return  # our own threads' records would loop back into this handler
        if self._closed:
            self._count(dropped=1)
            return
        try:
            key = uuid.uuid4().hex
            event = _Event(key, self._event_json(record, key))
        except Exception:  # logging's contract: report a record that cannot be formatted
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._spool_or_drop([event], "the in-memory queue is full")

    def _event_json(self, record: logging.LogRecord, key: str) -> bytes:
        """The event payload for ``record`` (see the module docstring)."""
        if self._tenant is not None and self._service is not None:
            audit_event = event_from_record(record, key, tenant=self._tenant, service=self._service)
            return encode_event(audit_event)
        event: dict[str, Any] = {
            "event_id": key,
            "time": int(record.created * 1000),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        audit = record.__dict__.get("audit")
        if audit is not None:
            event["audit"] = audit
        if record.exc_info:
            event["exception"] = logging.Formatter().formatException(record.exc_info)
        return json.dumps(event, sort_keys=True, separators=(",", ":"), default=str).encode()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event emitted so far is in the log or the spool (see :meth:`settle`)."""
        self.settle(timeout)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted before this call is in the log or the spool.

        Returns False if that did not happen within ``timeout`` seconds (default: the close
        timeout), or if the background thread has stopped.
        """
        if self._own_thread() or not self._thread.is_alive():
            return False
        limit = self._close_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=limit)
        except queue.Full:
            return False
        return marker.done.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Flush (bounded by ``close_timeout``), stop the thread and close the client."""
        if self._closed:
            return
        atexit.unregister(self.close)
        if self._thread.is_alive() and not self._own_thread():
            self.flush(self._close_timeout)
            try:
                self._queue.put(_Stop(), timeout=self._close_timeout)
            except queue.Full:
                _warn("could not stop the background thread: the queue stays full")
            self._thread.join(self._close_timeout)
            if self._thread.is_alive():
                _warn(f"background thread still busy after {self._close_timeout:g} s")
        self._closed = True
        if self._client is not None and not self._thread.is_alive():
            self._client.close()
        super().close()

    def _own_thread(self) -> bool:
        me = threading.current_thread()
        return me is self._thread or (self._client is not None and me is self._client.thread)

    # -- the background thread -----------------------------------------------------------

    def _run(self) -> None:
        """Batch, send, spool and drain until stopped; never dies on an error."""
        running = True
        while running:
            try:
                running = self._step()
            except Exception as e:  # the thread must survive anything; events stay spooled
                _warn(f"unexpected error in the background thread: {type(e).__name__}: {e}")
                time.sleep(self._interval)

    def _step(self) -> bool:
        """One round: collect a batch, deliver it, drain the spool when due, release flushes."""
        events, markers, stop = self._collect()
        if events:
            self._deliver(events)
        if not stop:
            self._drain()
        for marker in markers:
            marker.done.set()
        return not stop

    def _collect(self) -> tuple[list[_Event], list[_Flush], bool]:
        """Up to ``batch_size`` events, waiting at most ``flush_interval``; stops at a marker."""
        events: list[_Event] = []
        markers: list[_Flush] = []
        deadline = time.monotonic() + self._interval
        while len(events) < self._batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(item, _Event):
                events.append(item)
            elif isinstance(item, _Flush):
                markers.append(item)
                break
            else:
                return events, markers, True
        return events, markers, False

    def _deliver(self, events: list[_Event]) -> None:
        """Send now, or spool: while the spool is non-empty (order) or a retry is pending."""
        settled = 0
        if self._spool.size == 0 and time.monotonic() >= self._retry_at:
            settled = self._send(events)
        if settled < len(events):
            self._spool_or_drop(events[settled:], "the log is unavailable")

    def _drain(self) -> None:
        """Send spooled events oldest-first, deleting each segment once it is all in the log."""
        if self._spool.size == 0 or time.monotonic() < self._retry_at:
            return
        for segment in self._spool.segments():
            self._spool.seal(segment)
            events = self._spool.read(segment)
            done = self._progress.get(segment, 0)
            while done < len(events):
                chunk = events[done : done + self._batch_size]
                settled = self._send(chunk)
                done += settled
                if settled < len(chunk):
                    self._progress[segment] = done
                    return
            self._progress.pop(segment, None)
            self._spool.remove(segment)

    def _send(self, events: Sequence[_Event]) -> int:
        """Submit a batch; return how many leading events are settled (in the log, or dropped
        because the log rejected them). Fewer than all means the log is unavailable."""
        try:
            self._submit(events)
        except MalformedError as e:
            # The log refused the request itself (400/413): bisect to drop only the poison.
            if len(events) == 1:
                self._count(dropped=1)
                _warn(f"the log rejected an event, dropping it: {e}")
                return 1
            half = len(events) // 2
            first = self._send(events[:half])
            return first if first < half else first + self._send(events[half:])
        except TranslogError as e:
            if isinstance(e, VerificationError):
                _warn(f"the log's answer did not verify; events stay spooled: {e}")
            self._backoff(e)
            return 0
        self._retry_delay = self._interval
        self._retry_at = 0.0
        self._count(sent=len(events))
        return len(events)

    def _submit(self, events: Sequence[_Event]) -> None:
        if self._client is None:
            self._client = SyncLogClient(
                self.url,
                self._vkey,
                token=self._token,
                state_path=self._state_path,
                timeout=self._timeout,
                retries=1,
            )
        self._client.submit_batch(
            [e.payload for e in events], kind=self._kind, idempotency_keys=[e.key for e in events]
        )

    def _backoff(self, error: TranslogError) -> None:
        """Schedule the next attempt; the delay doubles up to ``max_retry_interval``."""
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self._max_retry)
        self._warn_limited(
            "unavailable", f"the log is unavailable, spooling to {self._spool.directory}: {error}"
        )

    def _spool_or_drop(self, events: list[_Event], why: str) -> None:
        """Spool what fits; drop (count and warn) the rest."""
        try:
            written = self._spool.append(events)
        except OSError as e:
            written = 0
            _warn(f"couldn't write to the spool {self._spool.directory}: {e.strerror}")
        lost = len(events) - written
        self._count(spooled=written, dropped=lost)
        if lost:
            self._warn_limited(
                "dropped",
                f"{why} and the spool is full ({self._spool.size} of {self._spool.max_bytes} "
                f"bytes): dropped {lost} events ({self.dropped} in total)",
            )

    def _count(self, *, sent: int = 0, spooled: int = 0, dropped: int = 0) -> None:
        with self._counts_lock:
            self.sent += sent
            self.spooled += spooled
            self.dropped += dropped

    def _warn_limited(self, kind: str, message: str) -> None:
        """Warn on stderr at most once per ten seconds for each ``kind`` of trouble."""
        now = time.monotonic()
        last = self._last_warning.get(kind)
        if last is None or now - last >= _WARN_INTERVAL:
            self._last_warning[kind] = now
            _warn(message)
