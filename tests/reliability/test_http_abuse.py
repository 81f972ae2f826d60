"""HTTP/1.1 abuse against ``translog serve``, over raw sockets.

Malformed framing (bad chunking, conflicting Content-Length, Content-Length with
Transfer-Encoding, unknown transfer codings, undecodable Content-Encoding), oversized
requests (declared, streamed, and a gzip bomb), header floods, long URLs, garbage, pipelining,
slow request heads (slowloris), slow bodies and many connections. In every case: an answer
below 500 or a closed connection, never a crash or a traceback in the log; memory stays
bounded; every submission the server accepted is in the tree afterwards.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import LogDir, ServerProcess, fsck_ok, make_log
from translog.storage.lmdb import LMDBStorage

pytestmark = pytest.mark.system

MAX_BODY = 1 << 20
IDLE_MS = 1500
BODY_MS = 1500


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LogDir, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("abuse")
    log = make_log(
        tmp / "data",
        config={
            "server.max_body_bytes": MAX_BODY,
            "server.idle_timeout_ms": IDLE_MS,
            "server.body_timeout_ms": BODY_MS,
        },
    )
    server = ServerProcess(log, tmp, "abuse")
    server.start()
    yield log, server
    server.kill_if_running()


def exchange(port: int, data: bytes, wait: float = 2.0, responses: int = 1) -> bytes:
    """Send ``data``; read until ``responses`` complete responses arrived, the server closed
    the connection, or ``wait`` seconds passed with nothing new."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if complete(out) >= responses:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def complete(raw: bytes) -> int:
    """How many complete final (non-1xx) Content-Length-framed responses ``raw`` holds."""
    count = 0
    while (end := raw.find(b"\r\n\r\n")) >= 0:
        head = raw[:end]
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        size = int(length.group(1)) if length else 0
        if len(raw) < end + 4 + size:
            break
        if not re.match(rb"HTTP/1\.[01] 1\d\d ", head):
            count += 1
        raw = raw[end + 4 + size :]
    return count


def statuses(raw: bytes) -> list[int]:
    return [int(x) for x in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


def post(token: str, head: str, body: bytes = b"") -> bytes:
    return (
        f"POST /add HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{head}\r\n".encode()
        + body
    )


def cases(token: str) -> dict[str, tuple[bytes, int]]:
    """name -> (request bytes, the one final status expected)."""
    return {
        "huge declared length": (post(token, "Content-Length: 1000000000000\r\n", b"abc"), 413),
        "expect-100 with a huge length": (
            post(token, "Expect: 100-continue\r\nContent-Length: 99999999999\r\n"),
            413,
        ),
        "conflicting Content-Length": (
            post(token, "Content-Length: 3\r\nContent-Length: 5\r\n", b"abcde"),
            400,
        ),
        "Content-Length with Transfer-Encoding": (
            post(
                token,
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        "bad chunk size": (
            post(token, "Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        "chunk size overflow": (
            post(token, "Transfer-Encoding: chunked\r\n", b"f" * 24 + b"\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        "unknown transfer coding": (
            post(token, "Transfer-Encoding: gzip, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        "undecodable Content-Encoding": (
            post(token, "Content-Encoding: gzip\r\nContent-Length: 5\r\n", b"abcde"),
            400,
        ),
        "negative Content-Length": (post(token, "Content-Length: -5\r\n"), 400),
        "header too large": (
            b"GET /checkpoint HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
            400,
        ),
        "header flood": (
            b"GET /checkpoint HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(20_000))
            + b"\r\n",
            400,
        ),
        "long URL": (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        "binary garbage": (bytes(range(256)) * 4, 400),
        "invalid method": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        "NUL in a header": (b"GET /checkpoint HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
        "obsolete line folding": (
            b"GET /checkpoint HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
            400,
        ),
        "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        "non-ASCII idempotency key": (
            post(token, "Idempotency-Key: \xff\xfe\r\nContent-Length: 1\r\n", b"x").replace(
                b"\xc3\xbf\xc3\xbe", b"\xff\xfe"
            ),
            400,
        ),
        "non-ASCII token": (
            b"POST /add HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
            b"Content-Length: 1\r\n\r\nx",
            401,
        ),
        "dot segments": (b"GET /tile/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        "bad percent-encoding": (
            b"GET /ct/v1/get-entries?start=%ff&end=%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
    }


def test_malformed_and_oversized_requests(served: tuple[LogDir, ServerProcess]) -> None:
    log, server = served
    for name, (request, expected) in cases(log.token).items():
        got = [s for s in statuses(exchange(server.port, request)) if s >= 200]  # not 100
        assert got == [expected], f"{name}: {got}"
    # A chunked body that keeps coming past the limit is cut off with a 413.
    chunk = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
    streamed = post(log.token, "Transfer-Encoding: chunked\r\n", chunk * 40 + b"0\r\n\r\n")
    assert statuses(exchange(server.port, streamed)) == [413]
    # A gzip bomb: 64 KiB on the wire, 64 MiB once decoded, limit 1 MiB.
    bomb = gzip.compress(b"\0" * (64 << 20))
    request = post(log.token, f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n", bomb)
    assert statuses(exchange(server.port, request, wait=5.0)) == [413]
    assert server.proc is not None and server.proc.poll() is None
    assert server.rss_bytes() < 400 << 20


def test_pipelining(served: tuple[LogDir, ServerProcess]) -> None:
    log, server = served
    gets = b"GET /checkpoint HTTP/1.1\r\nHost: x\r\n\r\n" * 50
    assert statuses(exchange(server.port, gets, responses=50)) == [200] * 50
    posts = b"".join(
        post(log.token, f"Idempotency-Key: pipe-{i}\r\nContent-Length: 6\r\n", b"pipe%02d" % i)
        for i in range(20)
    )
    assert statuses(exchange(server.port, posts, wait=5.0, responses=20)) == [200] * 20


def test_slow_heads_and_bodies_are_cut_off(served: tuple[LogDir, ServerProcess]) -> None:
    log, server = served
    socks: list[socket.socket] = []
    closed = 0
    before = server.rss_bytes()
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"POST /add HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    started = time.monotonic()
    try:
        # While 300 slow heads trickle in, a normal request is answered promptly.
        t = time.monotonic()
        assert statuses(
            exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0.5)
        ) == [200]
        assert time.monotonic() - t < 2.0
        while time.monotonic() - started < (IDLE_MS / 1000) * 3 and closed < len(socks):
            closed = 0
            for s in socks:
                try:
                    s.sendall(b"X")  # one more byte of header, now and then
                    s.settimeout(0.001)
                    if s.recv(1) == b"":
                        closed += 1
                except (BrokenPipeError, ConnectionResetError):
                    closed += 1
                except TimeoutError:
                    pass
            time.sleep(0.3)
        assert closed == len(socks), f"only {closed} of {len(socks)} slow heads were closed"
    finally:
        for s in socks:
            s.close()
    assert server.rss_bytes() - before < 64 << 20
    # A body that never finishes is answered 408 once body_timeout_ms has passed.
    slow = post(log.token, "Content-Length: 100\r\n", b"only part of it")
    t = time.monotonic()
    assert statuses(exchange(server.port, slow, wait=(BODY_MS / 1000) * 3)) == [408]
    assert time.monotonic() - t >= BODY_MS / 1000 * 0.9


def test_many_connections(served: tuple[LogDir, ServerProcess]) -> None:
    _, server = served
    before = server.rss_bytes()
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(1000)]
    results: list[list[int]] = []

    def ask() -> None:
        results.append(
            statuses(exchange(server.port, b"GET /checkpoint HTTP/1.1\r\nHost: x\r\n\r\n", 2.0))
        )

    try:
        threads = [threading.Thread(target=ask) for _ in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert results == [[200]] * 20
        grown = server.rss_bytes() - before
        assert grown < 64 << 20, f"1000 idle connections cost {grown >> 20} MiB"
    finally:
        for s in socks:
            s.close()


def test_zz_afterwards_nothing_lost_and_no_traceback(
    served: tuple[LogDir, ServerProcess],
) -> None:
    """Runs last in this module: the server survived everything and kept every entry."""
    log, server = served
    assert statuses(exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]
    assert server.stop() == 0
    stderr = server.output()
    assert "Traceback" not in stderr
    assert log.token not in stderr
    accepted = len(re.findall(r'"method":"POST","path":"/add","query":\{\},"status":200', stderr))
    storage = LMDBStorage(Path(log.data) / "lmdb", readonly=True)
    try:
        assert storage.size() == accepted == 20
    finally:
        storage.close()
    ok, out = fsck_ok(log)
    assert ok, out
