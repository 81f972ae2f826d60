"""Helpers for client and handler tests: configs, apps, and a server on its own thread.

``ThreadedServer`` runs an app on a private event loop thread, so blocking code
(``SyncLogClient``, ``TranslogHandler``) can talk to it from the test's thread, even from inside
a running event loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from aiohttp import web

from translog.config import Config, LogSection, PublisherSection, ServerSection
from translog.core.ct import TreeHeadSigner
from translog.core.signing import NoteSigner
from translog.http.app import make_app
from translog.http.keys import LOG
from translog.log.sequencer import Log
from translog.log.tokens import TokenStore
from translog.storage.memory import MemoryStorage

T = TypeVar("T")


def build_app(
    signer: NoteSigner,
    *,
    tree_head_signer: TreeHeadSigner | None = None,
    interval_ms: int = 50,
    middlewares: Iterable[Any] = (),
    **server: Any,
) -> tuple[web.Application, str]:
    """A log app over fresh memory storage and a token with submit and read scopes."""
    tokens = TokenStore()
    token = tokens.create("client", ("submit", "read"))
    config = Config(
        log=LogSection(origin=signer.name),
        publisher=PublisherSection(interval_ms=interval_ms),
        server=ServerSection(**server),
    )
    app = make_app(
        config,
        storage=MemoryStorage(),
        signer=signer,
        tree_head_signer=tree_head_signer or TreeHeadSigner.generate(),
        tokens=tokens,
    )
    for i, mw in enumerate(middlewares):
        app.middlewares.insert(i, mw)  # outermost: they see the final responses
    return app, token


def reserve_port() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1 and not listening: connections to the
    port are refused (a log that is down), yet no other process can take the port, and the
    kernel never picks it as the local port of an outgoing connection (a client retrying the
    port can then not connect to itself). Serve it later with ``ThreadedServer(app,
    sock=...)``, the same log coming back on the same address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadedServer:
    """An app served on 127.0.0.1 by an AppRunner on its own event loop thread."""

    def __init__(
        self, app: web.Application, port: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        """Serve on ``port`` (0: any free one), or on ``sock``, a bound socket (see
        :func:`reserve_port`), which it then listens on and owns."""
        self.app = app
        self.port = port
        self.sock = sock
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Log:
        return self.app[LOG]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> ThreadedServer:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        if self.sock is not None:
            await web.SockSite(self._runner, self.sock).start()
        else:
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
