"""``TranslogHandler``: audit events through ``logging`` into a log, the spool, and its bounds.

Servers run on their own event loop thread (``ThreadedServer``), so these tests are plain
blocking code, like the applications that use the handler. "Server down" is a port bound and
not listening (connections refused) or listening and never accepting (connections hang until
the client's timeout); the same socket is then served, and the spool must drain with no loss
and no duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
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

from tests.integration.logservers import ThreadedServer, build_app, reserve_port
from translog.client.handler import TranslogHandler
from translog.core.signing import NoteSigner

Handler = Callable[[web.Request], Any]


@pytest.fixture
def down() -> Iterator[socket.socket]:
    """The address of a log that is down: a port bound and not listening (refused), which
    nothing else can take meanwhile; ``ThreadedServer(app, sock=down)`` brings the log up."""
    sock = reserve_port()
    yield sock
    sock.close()


@pytest.fixture
def hung() -> Iterator[socket.socket]:
    """The address of a log that is down and hangs: a port that listens and never accepts, so
    a client waits for its timeout (the worst case for a caller that would wait on the log)."""
    sock = reserve_port()
    sock.listen(0)
    yield sock
    sock.close()


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def runqueue_waits() -> dict[str, int]:
    """Per thread of this process, the nanoseconds it has spent runnable but waiting for a
    CPU (Linux schedstat: the scheduler's doing, not the thread's); empty where the kernel
    does not say."""
    waits = {}
    for stat in Path("/proc/self/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            waits[stat.parent.name] = int(stat.read_text().split()[1])
    return waits


def runqueue_wait_between(before: dict[str, int], after: dict[str, int]) -> int:
    """Nanoseconds this process's threads waited for a CPU between two readings."""
    return sum(max(0, ns - before.get(tid, 0)) for tid, ns in after.items())


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
    signer: NoteSigner, tmp_path: Path, audit_logger: logging.Logger, hung: socket.socket
) -> None:
    """The log hangs (each request waits for the client's 0.5 s timeout): emit must not
    wait for it, nor for the spool. What is timed is each emit less what the machine, not
    the handler, costs it: the time this process's threads waited for a CPU (on a loaded
    machine the scheduler preempts a thread for tens of ms) and garbage collection (off
    while emitting). While the log hangs, the handler's own threads wait on the network and
    do not compete with emit for the GIL."""
    spool = tmp_path / "spool"
    app, token = build_app(signer)  # served only later, on the same socket
    handler = make_handler(url_of(hung), signer, token, spool, timeout=0.5)
    audit_logger.addHandler(handler)
    blocked, waits = [], []
    gc.disable()
    try:
        for i in range(300):
            started = time.perf_counter_ns()
            before = runqueue_waits()
            audit_logger.info("event %d", i, extra={"audit": {"n": i}})
            waited = runqueue_wait_between(before, runqueue_waits())
            blocked.append(time.perf_counter_ns() - started - waited)
            waits.append(waited)
    finally:
        gc.enable()
    assert handler.settle(10)
    assert (handler.sent, handler.spooled, handler.dropped) == (0, 300, 0)
    assert segments(spool) and 0 < handler.spool_bytes <= 64 << 20
    worst = max(range(300), key=blocked.__getitem__)
    assert blocked[worst] < 20_000_000, (
        f"emit {worst} blocked for {blocked[worst] / 1e6:.1f} ms "
        f"(besides {waits[worst] / 1e6:.1f} ms waiting for a CPU)"
    )

    server = ThreadedServer(app, sock=hung).start()
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
    down: socket.socket,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spool = tmp_path / "spool"
    handler = make_handler(url_of(down), signer, "tl_x", spool, max_spool_bytes=2000)
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
    signer: NoteSigner, tmp_path: Path, audit_logger: logging.Logger, down: socket.socket
) -> None:
    spool = tmp_path / "spool"
    app, token = build_app(signer)
    before = make_handler(url_of(down), signer, token, spool)
    audit_logger.addHandler(before)
    for i in range(15):
        audit_logger.info("event %d", i)
    audit_logger.removeHandler(before)
    before.close()  # the spool stays behind, as after a crash
    assert before.spooled == 15
    saved = tmp_path / "saved"
    shutil.copytree(spool, saved)
    server = ThreadedServer(app, sock=down).start()
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


def test_events_are_flushed_to_the_spool_at_exit(
    signer: NoteSigner, tmp_path: Path, down: socket.socket
) -> None:
    spool = tmp_path / "spool"
    script = f"""
import logging
from translog.client.handler import TranslogHandler
handler = TranslogHandler(
    {url_of(down)!r}, {signer.vkey!r}, "tl_x", spool_dir={str(spool)!r},
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
