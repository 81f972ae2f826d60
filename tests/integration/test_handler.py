"""``TranslogHandler``: audit events through ``logging`` into a log, the spool, and its bounds.

Servers run on their own event loop thread (``ThreadedServer``), so these tests are plain
blocking code, like the applications that use the handler. "Server down" is a port nothing
listens on; the same port is then served, and the spool must drain with no loss and no
duplicates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.integration.logservers import ThreadedServer, build_app
from translog.handler import TranslogHandler
from translog.signing import NoteSigner

Handler = Callable[[web.Request], Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def audit_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(f"test.audit.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def make_handler(
    url: str, signer: NoteSigner, token: str, spool: Path, **kw: Any
) -> TranslogHandler:
    options: dict[str, Any] = {"flush_interval": 0.02, "max_retry_interval": 0.1, **kw}
    return TranslogHandler(url, signer.vkey, token, spool_dir=spool, **options)


def logged_events(server: ThreadedServer) -> list[dict[str, Any]]:
    """Every event payload in the log, in log order."""
    entries = server.log.entries(0, server.log.size)
    return [json.loads(e.payload or b"") for e in entries]


def segments(spool: Path) -> list[Path]:
    return sorted(spool.glob("spool-*.jsonl"))


def test_events_arrive_in_the_log(
    signer: NoteSigner, tmp_path: Path, audit_logger: logging.Logger
) -> None:
    app, token = build_app(signer)
    server = ThreadedServer(app).start()
    try:
        handler = make_handler(server.url, signer, token, tmp_path / "spool")
        audit_logger.addHandler(handler)
        for i in range(20):
            audit_logger.info("user %s did %d", "alice", i, extra={"audit": {"user": "alice"}})
        try:
            raise ValueError("boom")
        except ValueError:
            audit_logger.exception("failed")
        assert handler.settle(10)
        assert handler.stats() == {"sent": 21, "spooled": 0, "dropped": 0, "spool_bytes": 0}
        events = logged_events(server)
    finally:
        server.stop()
    assert [e["message"] for e in events[:20]] == [f"user alice did {i}" for i in range(20)]
    first = events[0]
    assert set(first) == {"event_id", "time", "level", "logger", "message", "audit"}
    assert first["audit"] == {"user": "alice"} and first["level"] == "INFO"
    assert first["logger"] == audit_logger.name
    assert abs(first["time"] - time.time() * 1000) < 60_000
    assert "ValueError: boom" in events[20]["exception"]
    assert len({e["event_id"] for e in events}) == 21


def test_log_down_spools_without_blocking_then_drains_exactly_once(
    signer: NoteSigner, tmp_path: Path, audit_logger: logging.Logger
) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    app, token = build_app(signer)  # served only later, on the same port
    handler = make_handler(f"http://127.0.0.1:{port}", signer, token, spool)
    audit_logger.addHandler(handler)
    durations = []
    for i in range(300):
        started = time.perf_counter()
        audit_logger.info("event %d", i, extra={"audit": {"n": i}})
        durations.append(time.perf_counter() - started)
    assert handler.settle(10)
    assert (handler.sent, handler.spooled, handler.dropped) == (0, 300, 0)
    assert segments(spool) and 0 < handler.spool_bytes <= 64 << 20
    assert max(durations) < 0.02, f"emit blocked for {max(durations) * 1000:.1f} ms"

    server = ThreadedServer(app, port=port).start()
    try:
        wait_until(lambda: handler.sent == 300)
        events = logged_events(server)
    finally:
        handler.close()
        server.stop()
    assert [e["audit"]["n"] for e in events] == list(range(300))  # oldest first, once each
    assert len({e["event_id"] for e in events}) == 300
    assert segments(spool) == [] and handler.spool_bytes == 0


def test_spool_bound_drops_are_counted_and_reported(
    signer: NoteSigner,
    tmp_path: Path,
    audit_logger: logging.Logger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spool = tmp_path / "spool"
    handler = make_handler(
        f"http://127.0.0.1:{free_port()}", signer, "tl_x", spool, max_spool_bytes=2000
    )
    audit_logger.addHandler(handler)
    for i in range(100):
        audit_logger.info("event number %d with some padding to take up room", i)
    assert handler.settle(10)
    assert handler.spooled + handler.dropped == 100
    assert handler.dropped > 50 and handler.spooled > 0
    assert handler.spool_bytes <= 2000
    assert sum(p.stat().st_size for p in segments(spool)) == handler.spool_bytes
    assert "the spool is full" in capsys.readouterr().err


def test_full_queue_writes_straight_to_the_spool(
    signer: NoteSigner, tmp_path: Path, audit_logger: logging.Logger
) -> None:
    @web.middleware
    async def slow_first(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and not slow_first.done:  # type: ignore[attr-defined]
            slow_first.done = True  # type: ignore[attr-defined]
            await asyncio.sleep(0.5)
        resp: web.StreamResponse = await handler(request)
        return resp

    slow_first.done = False  # type: ignore[attr-defined]
    app, token = build_app(signer, middlewares=[slow_first])
    server = ThreadedServer(app).start()
    try:
        handler = make_handler(
            server.url, signer, token, tmp_path / "spool", queue_size=2, batch_size=1
        )
        audit_logger.addHandler(handler)
        audit_logger.info("first")
        wait_until(lambda: handler._queue.qsize() == 0)
        started = time.perf_counter()
        for i in range(10):
            audit_logger.info("burst %d", i)
        assert time.perf_counter() - started < 0.2  # fsync'd spool writes, no network
        assert handler.spooled >= 8
        wait_until(lambda: handler.sent == 11)
        events = logged_events(server)
    finally:
        server.stop()
    assert sorted(e["message"] for e in events) == sorted(
        ["first", *(f"burst {i}" for i in range(10))]
    )


def test_leftover_spool_is_drained_without_duplicates(
    signer: NoteSigner, tmp_path: Path, audit_logger: logging.Logger
) -> None:
    spool = tmp_path / "spool"
    port = free_port()
    app, token = build_app(signer)
    down = make_handler(f"http://127.0.0.1:{port}", signer, token, spool)
    audit_logger.addHandler(down)
    for i in range(15):
        audit_logger.info("event %d", i)
    audit_logger.removeHandler(down)
    down.close()  # the spool stays behind, as after a crash
    assert down.spooled == 15
    saved = tmp_path / "saved"
    shutil.copytree(spool, saved)
    server = ThreadedServer(app, port=port).start()
    try:
        first = make_handler(server.url, signer, token, spool, flush_interval=0.3)
        audit_logger.addHandler(first)
        for i in range(3):  # queued while the leftover spool waits: they must go after it
            audit_logger.info("new %d", i)
        wait_until(lambda: first.sent == 18)
        audit_logger.removeHandler(first)
        first.close()
        # Crash before the drained segment was deleted: the same events are spooled again.
        for p in saved.iterdir():
            shutil.copy(p, spool / p.name)
        second = make_handler(server.url, signer, token, spool)
        wait_until(lambda: second.sent == 15)
        second.close()
        events = logged_events(server)
    finally:
        server.stop()
    expected = [f"event {i}" for i in range(15)] + [f"new {i}" for i in range(3)]
    assert [e["message"] for e in events] == expected
    assert segments(spool) == []


def test_an_event_the_log_rejects_is_dropped_alone(
    signer: NoteSigner, tmp_path: Path, audit_logger: logging.Logger
) -> None:
    app, token = build_app(signer, max_payload_bytes=300)
    server = ThreadedServer(app).start()
    try:
        handler = make_handler(server.url, signer, token, tmp_path / "spool", flush_interval=0.5)
        audit_logger.addHandler(handler)
        for i in range(5):
            audit_logger.info("ok %d", i)
        audit_logger.info("x" * 500)
        for i in range(5, 9):
            audit_logger.info("ok %d", i)
        assert handler.settle(10)
        events = logged_events(server)
    finally:
        server.stop()
    assert (handler.sent, handler.dropped, handler.spooled) == (9, 1, 0)
    assert [e["message"] for e in events] == [f"ok {i}" for i in range(9)]


def test_close_flushes_pending_events(
    signer: NoteSigner, tmp_path: Path, audit_logger: logging.Logger
) -> None:
    app, token = build_app(signer)
    server = ThreadedServer(app).start()
    try:
        handler = make_handler(server.url, signer, token, tmp_path / "spool", flush_interval=5.0)
        audit_logger.addHandler(handler)
        for i in range(7):
            audit_logger.warning("closing %d", i)
        handler.close()  # the batch window is 5 s: only close's flush can send them now
        assert handler.sent == 7 and server.log.size == 7
        audit_logger.warning("after close")
        assert handler.dropped == 1
    finally:
        server.stop()


def test_events_are_flushed_to_the_spool_at_exit(signer: NoteSigner, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    script = f"""
import logging
from translog.handler import TranslogHandler
handler = TranslogHandler(
    "http://127.0.0.1:{free_port()}", {signer.vkey!r}, "tl_x", spool_dir={str(spool)!r},
    flush_interval=30.0,
)
logger = logging.getLogger("exiting")
logger.addHandler(handler)
logger.propagate = False
for i in range(5):
    logger.warning("at exit %d", i)
# no close(): the atexit hook must flush the five events (to the spool: the log is down)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    lines = [line for p in segments(spool) for line in p.read_text().splitlines()]
    messages = [json.loads(json.loads(line)["payload"])["message"] for line in lines]
    assert messages == [f"at exit {i}" for i in range(5)]
