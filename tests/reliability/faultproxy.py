"""A TCP proxy for fault injection, switchable at runtime (tests only).

``FaultProxy(target_port).start()`` listens on 127.0.0.1 (``.port``) and forwards every
connection to ``127.0.0.1:target_port`` from a thread running its own asyncio loop. Modes,
set with :meth:`FaultProxy.set` while connections are open:

* ``pass``: forward;
* ``delay``: forward each chunk after ``delay_s``;
* ``drop``: close every connection (open ones and new ones) without an answer (FIN);
* ``reset``: abort every connection with a TCP RST (``SO_LINGER`` 0);
* ``blackhole``: a partition: new connections are accepted and never answered, bytes on open
  connections are held (not forwarded, not discarded), as a network that drops every packet
  would do while TCP retransmits. Back to ``pass``, held bytes flow on: what was sent during a
  short partition arrives late, as on a real network;
* ``swallow``: requests are forwarded (and kept in ``sent``), answers are discarded (kept in
  ``swallowed``): the target did the work and replied, the reply never arrives (used to kill a
  witness between its fsync and its reply).

``faults`` counts every mode switch away from ``pass`` (for the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

MODES = ("pass", "delay", "drop", "reset", "blackhole", "swallow")


class FaultProxy:
    """One listening port in front of one target port."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay_s = 0.0
        self.faults = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self.sent: list[bytes] = []
        self.swallowed: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._open):
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set(self, mode: str, delay_s: float = 0.0) -> None:
        """Switch mode now; ``drop`` and ``reset`` also end open connections."""
        assert mode in MODES, mode
        if mode != "pass" and self.mode != mode:
            self.faults += 1

        async def apply() -> None:
            self.mode, self.delay_s = mode, delay_s
            assert self._flowing is not None
            if mode == "blackhole":
                self._flowing.clear()
            else:
                self._flowing.set()
            if mode in ("drop", "reset"):
                for w in list(self._open):
                    _end(w, reset=mode == "reset")

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            if self.mode in ("drop", "reset"):
                _end(writer, reset=self.mode == "reset")
                return
            assert self._flowing is not None
            await self._flowing.wait()
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:
                _end(writer, reset=True)
                return
            self._open.add(up_w)
            try:
                await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer, reply=True))
            finally:
                self._open.discard(up_w)
                up_w.transport.abort()
        finally:
            self._open.discard(writer)
            writer.transport.abort()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, reply: bool = False
    ) -> None:
        assert self._flowing is not None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await src.read(65536):
                await self._flowing.wait()
                if self.mode == "delay" and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.mode in ("drop", "reset") or dst.transport.is_closing():
                    return
                if self.mode == "swallow":
                    (self.swallowed if reply else self.sent).append(chunk)
                    if reply:
                        continue
                dst.write(chunk)
                await dst.drain()
        if not dst.transport.is_closing() and dst.can_write_eof():
            with contextlib.suppress(OSError):
                dst.write_eof()


def _end(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()
