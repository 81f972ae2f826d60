"""A tlog-tiles log written independently of translog's server code, honest or malicious.

:class:`TileLog` keeps its leaves in memory and computes checkpoints, hash tiles and entry
bundles with its own naive RFC 6962 code (full levels, recursive MTH) and signs notes with
``cryptography`` directly; nothing of translog's Merkle, tile or signing code is used, so the
monitor is tested against a second implementation of the specs. :meth:`TileLog.write_static`
writes the same tree as a static directory (what nginx would serve).

:class:`MaliciousServer` serves one or two such logs over HTTP and can misbehave: show another
view (fork), rewrite a tile, drop or reorder an entry in a bundle, replay an old checkpoint,
stop refreshing, serve a bad signature, or go away.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.integration.logservers import ThreadedServer


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes, recursively (the textbook definition)."""
    if not hashes:
        return _h(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return _h(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:]))


def _index_path(n: int) -> str:
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.insert(0, f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(parts)


class Key:
    """An Ed25519 note key, by hand: key ID, vkey, signature lines."""

    def __init__(self, origin: str, seed: bytes | None = None) -> None:
        self.origin = origin
        self._key = (
            Ed25519PrivateKey.from_private_bytes(seed) if seed else Ed25519PrivateKey.generate()
        )
        pub = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = _h(origin.encode() + b"\n\x01" + pub)[:4]
        material = base64.b64encode(b"\x01" + pub).decode()
        self.vkey = f"{origin}+{self.key_id.hex()}+{material}"

    def sign_note(self, text: str) -> bytes:
        sig = self._key.sign(text.encode())
        line = base64.b64encode(self.key_id + sig).decode()
        return f"{text}\n— {self.origin} {line}\n".encode()


class TileLog:
    """A log's leaves and everything derived from them, computed naively."""

    def __init__(self, key: Key, leaves: list[bytes] | None = None) -> None:
        self.key = key
        self.leaves: list[bytes] = list(leaves or [])
        self._cache: dict[tuple[int, bytes, int], dict[str, bytes]] = {}

    def copy(self) -> TileLog:
        return TileLog(self.key, self.leaves)

    def add(self, *leaves: bytes) -> None:
        self.leaves.extend(leaves)

    def levels(self, size: int) -> list[list[bytes]]:
        level = [_h(b"\x00" + leaf) for leaf in self.leaves[:size]]
        out = [level]
        while len(level) > 1:
            level = [_h(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
            out.append(level)
        return out

    def root(self, size: int | None = None) -> bytes:
        n = len(self.leaves) if size is None else size
        return _mth([_h(b"\x00" + leaf) for leaf in self.leaves[:n]])

    def checkpoint(self, size: int | None = None) -> bytes:
        n = len(self.leaves) if size is None else size
        text = f"{self.key.origin}\n{n}\n{base64.b64encode(self.root(n)).decode()}\n"
        return self.key.sign_note(text)

    def resources(self, size: int | None = None) -> dict[str, bytes]:
        """Every tile and bundle a tlog-tiles log of ``size`` serves (all partial widths of
        earlier sizes are left out: only the current ones). Cached per size and content."""
        n = len(self.leaves) if size is None else size
        key = (n, self.leaves[n - 1] if n else b"", len(self.leaves))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._resources(n)
        return cached

    def _resources(self, n: int) -> dict[str, bytes]:
        levels = self.levels(n)
        out: dict[str, bytes] = {}
        tile_level = 0
        while tile_level * 8 < len(levels) and levels[tile_level * 8]:
            hashes = levels[tile_level * 8]
            for start in range(0, len(hashes), 256):
                chunk = hashes[start : start + 256]
                suffix = "" if len(chunk) == 256 else f".p/{len(chunk)}"
                out[f"tile/{tile_level}/{_index_path(start // 256)}{suffix}"] = b"".join(chunk)
            tile_level += 1
            if len(hashes) < 256:
                break
        for start in range(0, n, 256):
            chunk = self.leaves[start : min(start + 256, n)]
            suffix = "" if len(chunk) == 256 else f".p/{len(chunk)}"
            out[f"tile/entries/{_index_path(start // 256)}{suffix}"] = b"".join(
                len(e).to_bytes(2, "big") + e for e in chunk
            )
        return out

    def write_static(self, directory: Path) -> None:
        """Write ``checkpoint`` and every tile and bundle as files (an nginx-servable log)."""
        for path, data in {"checkpoint": self.checkpoint(), **self.resources()}.items():
            p = directory / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


class MaliciousServer:
    """Serves a :class:`TileLog` over HTTP; attributes switch misbehaviours on."""

    def __init__(self, log: TileLog) -> None:
        self.log = log
        self.other: TileLog | None = None
        """The second view (fork): served instead of ``log`` while set."""
        self.sizes_seen: dict[int, None] = {}
        self.tile_overrides: dict[str, bytes] = {}
        self.bundle_filter: Callable[[str, list[bytes]], list[bytes]] | None = None
        self.checkpoint_override: bytes | None = None
        self.frozen: bytes | None = None
        self.down = False
        self.requests = 0
        app = web.Application()
        app.router.add_get("/checkpoint", self._checkpoint)
        app.router.add_get("/{path:tile/.+}", self._tile)
        self.server = ThreadedServer(app)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> MaliciousServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def _view(self) -> TileLog:
        return self.other if self.other is not None else self.log

    async def _checkpoint(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.down:
            raise web.HTTPServiceUnavailable(text="down")
        if self.checkpoint_override is not None:
            return web.Response(body=self.checkpoint_override)
        if self.frozen is not None:
            return web.Response(body=self.frozen)
        view = self._view()
        self.sizes_seen[len(view.leaves)] = None
        return web.Response(body=view.checkpoint())

    async def _tile(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.down:
            raise web.HTTPServiceUnavailable(text="down")
        path = request.match_info["path"]
        if path in self.tile_overrides:
            return web.Response(body=self.tile_overrides[path])
        view = self._view()
        # Serve the tiles of every size this view published (partial tiles stay available).
        for size in [len(view.leaves), *reversed(list(self.sizes_seen))]:
            if size > len(view.leaves):
                continue
            data = view.resources(size).get(path)
            if data is not None:
                if path.startswith("tile/entries/") and self.bundle_filter is not None:
                    entries = _decode(data)
                    data = b"".join(
                        len(e).to_bytes(2, "big") + e for e in self.bundle_filter(path, entries)
                    )
                return web.Response(body=data)
        raise web.HTTPNotFound(text="no such tile")


def _decode(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def promise_json(key: Key, leaf: bytes, timestamp: int, deadline: int) -> dict[str, object]:
    """A translog-promise/v1 the log signs for ``leaf`` (inline translog leaf)."""
    lh = _h(b"\x00" + leaf)
    text = (
        f"translog-promise/v1\n{key.origin}\n{timestamp}\n{base64.b64encode(lh).decode()}\n"
        f"{deadline}\n"
    )
    return {
        "format": "translog-promise/v1",
        "leaf": base64.b64encode(leaf).decode(),
        "leaf_hash": base64.b64encode(lh).decode(),
        "timestamp": timestamp,
        "deadline": deadline,
        "duplicate": False,
        "promise": key.sign_note(text).decode(),
    }


def inline_leaf(timestamp: int, payload: dict[str, object] | bytes) -> bytes:
    """A translog v1 inline leaf, by hand."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return b"\x01" + timestamp.to_bytes(8, "big") + b"\x00" + body
