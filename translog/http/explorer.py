"""The explorer: a read-only page served by the log (``GET <prefix>/explorer``).

It shows the latest checkpoint and its cosignatures, searches events (with the visitor's read
token, sent only to this log), and verifies any event in the browser with WebCrypto: the
checkpoint's Ed25519 signature by the pinned vkey, the SHA-256 Merkle inclusion path to its
root, and the payload's commitment. The static files live in ``translog/http/explorer/``; they
are served with a strict Content-Security-Policy (no inline script, same-origin only).
"""

from __future__ import annotations

import importlib.resources

from aiohttp import web

from translog.errors import ConfigError, NotFoundError

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _load() -> dict[str, bytes]:
    root = importlib.resources.files("translog.http").joinpath("explorer")
    try:
        return {name: root.joinpath(name).read_bytes() for name in _FILES}
    except OSError as e:
        raise ConfigError(f"the packaged explorer files are missing: {e}") from e


def add_routes(app: web.Application, prefix: str) -> None:
    """Register ``/explorer`` and its static files."""
    files = _load()

    def serve(name: str) -> web.Response:
        return web.Response(
            body=files[name],
            headers={
                "Content-Type": _FILES[name],
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    async def page(request: web.Request) -> web.Response:
        """The explorer page."""
        return serve("index.html")

    async def static(request: web.Request) -> web.Response:
        """The explorer's script and style sheet."""
        name = request.match_info["name"]
        if name not in _FILES or name == "index.html":
            raise NotFoundError(f"no explorer file {name[:40]!r}")
        return serve(name)

    app.router.add_get(prefix + "/explorer", page)
    app.router.add_get(prefix + "/explorer/{name}", static)
