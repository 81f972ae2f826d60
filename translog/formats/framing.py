"""Incremental stream framing, shared by syslog's octet counting and RELP.

A :class:`StreamFramer` holds at most one frame's bytes. :meth:`StreamFramer.feed` returns
the frames completed so far; a broken frame makes the stream unusable (the connection must
close), but the frames before it are still returned, and the error is then raised by
:meth:`StreamFramer.check` and every later call. A subclass reads one frame at a time
(:meth:`StreamFramer.next_frame`).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from translog.errors import TranslogError

T = TypeVar("T")


class StreamFramer(Generic[T]):
    """The buffer and the error rule; subclasses say what a frame is."""

    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: TranslogError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: a partial frame."""
        return len(self._buf)

    def check(self) -> None:
        """Raise the framing error found after the frames :meth:`feed` returned, if any."""
        if self._error is not None:
            raise self._error

    def feed(self, data: bytes) -> list[T]:
        """Append ``data``; the frames it completes, in order."""
        self.check()
        buf = self._buf
        buf += data
        frames: list[T] = []
        pos = 0
        try:
            while True:
                frame, pos = self.next_frame(buf, pos)
                if frame is None:
                    break
                frames.append(frame)
        except TranslogError as e:
            self._error = e
            if not frames:
                raise
        finally:
            del buf[:pos]
        return frames

    def end(self) -> None:
        """At end of stream: a partial frame left over is an error."""
        self.check()
        if self._buf or self.in_frame():
            raise self.broken(f"stream ended inside a frame ({len(self._buf)} bytes)")

    def next_frame(self, buf: bytearray, pos: int) -> tuple[T | None, int]:
        """The frame at ``pos`` and the position after it; (None, position) when more bytes
        are needed (what was read so far, a header say, may be consumed). Raise on a
        broken frame."""
        raise NotImplementedError

    def in_frame(self) -> bool:
        """Whether a frame's header was consumed and its data is still awaited."""
        raise NotImplementedError

    def broken(self, reason: str) -> TranslogError:
        """The framing error for ``reason``."""
        raise NotImplementedError
