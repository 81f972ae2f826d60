"""Bearer tokens: created once, stored only as SHA-256 hashes, compared in constant time.

The store is a JSON file (mode 0600) in the data directory::

    {"tokens": [{"name": "ci", "hash": "<hex sha256>", "scopes": ["submit"],
                 "created_ms": 1764150000000, "revoked_ms": null, "rate_per_s": 0,
                 "tenants": ["acme"]}]}

Scopes: ``submit`` (POST entries), ``read`` (committed payloads and salts, and the tree when
``server.public_tree`` is false), ``admin`` (administrative endpoints). A token string is
``tl_`` + 32 random bytes in URL-safe base64; only its hash is ever written, and neither the
token nor its hash is logged. The server re-reads the file when it changes, so
``translog token create/revoke`` take effect without a restart.

Tenants: audit-event searches and reads (``/events/...``) need a ``read`` token scoped to the
event's tenant (``tenants``; ``"*"`` means every tenant). A token without tenants searches
nothing. Older token files without the field load with no tenants.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from translog.errors import AuthError, ConfigError, ForbiddenError, NotFoundError

SCOPES = ("submit", "read", "admin")
TOKEN_PREFIX = "tl_"


@dataclass(frozen=True)
class TokenInfo:
    """One token's record (never the token itself)."""

    name: str
    hash: str
    scopes: tuple[str, ...]
    created_ms: int
    revoked_ms: int | None = None
    rate_per_s: float = 0.0
    """Per-token submission rate limit in entries per second (0 = unlimited)."""
    tenants: tuple[str, ...] = ()
    """Tenants whose audit events this token may search and read ("*": all)."""

    def allows_tenant(self, tenant: str) -> bool:
        """Whether this token may see the audit events of ``tenant``."""
        return "*" in self.tenants or tenant in self.tenants


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class TokenStore:
    """Token records backed by a JSON file (or memory, when ``path`` is None)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._tokens: list[TokenInfo] = []
        self._mtime: float | None = None
        if path is not None and path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        st = self.path.stat()
        if st.st_mode & 0o077:
            raise ConfigError(
                f"token file {self.path} is readable by group or others; run chmod 600 {self.path}"
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._tokens = [
                TokenInfo(
                    **{**t, "scopes": tuple(t["scopes"]), "tenants": tuple(t.get("tenants", ()))}
                )
                for t in data["tokens"]
            ]
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"token file {self.path} is malformed: {e}") from e
        self._mtime = st.st_mtime

    def reload_if_changed(self) -> None:
        """Re-read the file if it changed on disk (cheap stat)."""
        if self.path is None:
            return
        try:
            mtime = os.stat(self.path).st_mtime  # os.stat: pathlib's costs more on every request
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._load()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"tokens": [asdict(t) for t in self._tokens]}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._mtime = self.path.stat().st_mtime

    def create(
        self,
        name: str,
        scopes: tuple[str, ...] = ("submit",),
        rate_per_s: float = 0.0,
        tenants: tuple[str, ...] = (),
    ) -> str:
        """Create a token; returns the token string (shown once, never stored)."""
        self.reload_if_changed()
        if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError("token name: use 1-64 letters, digits, '-', '_' or '.'")
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ConfigError(f"token scopes: unknown {bad}; choose from {', '.join(SCOPES)}")
        if any(t.name == name and t.revoked_ms is None for t in self._tokens):
            raise ConfigError(f"a live token named {name!r} exists; revoke it first")
        for tenant in tenants:
            if not tenant or len(tenant) > 64 or tenant.strip() != tenant:
                raise ConfigError(f"token tenant {tenant!r}: use 1-64 characters, or * for all")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(
            name,
            _digest(token),
            tuple(scopes),
            time.time_ns() // 10**6,
            None,
            rate_per_s,
            tuple(dict.fromkeys(tenants)),
        )
        self._tokens.append(info)
        self._save()
        return token

    def revoke(self, name: str) -> None:
        """Withdraw every live token with this name."""
        self.reload_if_changed()
        found = False
        now = time.time_ns() // 10**6
        for i, t in enumerate(self._tokens):
            if t.name == name and t.revoked_ms is None:
                self._tokens[i] = replace(t, revoked_ms=now)
                found = True
        if not found:
            raise NotFoundError(f"no live token named {name!r}")
        self._save()

    def list(self) -> list[TokenInfo]:
        """All records, revoked ones included."""
        self.reload_if_changed()
        return list(self._tokens)

    def authenticate(self, token: str | None, scope: str) -> TokenInfo:
        """The live token record for ``token`` holding ``scope``.

        Every stored hash is compared with ``hmac.compare_digest`` (no early exit on a match),
        so timing reveals nothing about which token, if any, matched.
        """
        if not token:
            raise AuthError("missing bearer token")
        self.reload_if_changed()
        digest = _digest(token)
        match: TokenInfo | None = None
        for t in self._tokens:
            if hmac.compare_digest(t.hash, digest) and match is None:
                match = t
        if match is None or match.revoked_ms is not None:
            raise AuthError("invalid or revoked token")
        if scope not in match.scopes:
            raise ForbiddenError(f"token {match.name!r} lacks the {scope!r} scope")
        return match
