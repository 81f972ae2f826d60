"""The translog client: submit entries and read the log, verifying everything before returning.

:class:`LogClient` is asynchronous (aiohttp); :class:`SyncLogClient` wraps it for blocking
code. Both trust exactly one thing, the log's verifier key (vkey), plus an optional witness
policy, and check every answer against them:

* **Checkpoints** (``GET /checkpoint``) must carry a valid log signature (origin = the vkey's
  name) and, with a policy, meet its witness quorum.
* **Consistency.** The last verified checkpoint per origin is kept, the way Go's checksum
  database client keeps its latest tree: in memory, and in a small JSON state file when
  ``state_path`` is given, so the memory survives restarts and is shared between processes::

      {"logs": {"<origin>": {"size": 8, "root_hash": "<base64>", "note": "<signed note>"}}}

  Every checkpoint the client meets (from ``/checkpoint`` or in a receipt) is compared with
  it. Same size: the roots must match. Larger: a consistency proof from the stored size must
  verify, and the larger checkpoint is then stored (atomically: temporary file, fsync, rename,
  mode 0600; a compare-and-swap under a lock file, so concurrent clients never lose a check).
  Smaller: the log must still serve the tiles of the stored tree, and they must prove the
  smaller checkpoint a prefix of it. A log that rolled back (it cannot serve the tree it
  signed) or forked (two signed checkpoints no proof can join) raises
  :class:`~translog.errors.InconsistencyError`, a security event carrying both signed notes
  (``older``: the one this client trusted before the call; ``newer``: the one just received)
  and the proof, if any. It is never reported as a network error.

  A smaller checkpoint is not by itself a rollback: receipts carry the checkpoint signed
  right after their batch, which is newer than the one published on the interval, and caches
  serve ``/checkpoint`` for up to a second. Go's sumdb client accepts such trees the same way.
* **Proofs** are computed from tlog-tiles (:class:`~translog.tiles.TileHashReader`), or taken
  from the RFC 6962 ``/ct/v1`` API with ``use_ct_api=True``, and always verified against a
  verified root. A proof that does not verify is told apart from a fork: when the tiles do not
  reproduce the log's own signed root they are bad data (:class:`VerificationError`); when they
  do, and prove that the log's tree at the old size has another root, that is a fork. Proofs
  that reach a receipt's checkpoint always come from tiles, which the log serves for its whole
  durable tree; the CT API answers only up to the published size.
* **Entries** are authenticated by a range proof over their entry bundle against a verified
  checkpoint; leaves, receipts, promises and payloads are checked with :mod:`translog.receipt`
  and :mod:`translog.leaf`. Verified tiles and bundles are cached (they are immutable); tiles
  that fail verification are never cached.

Errors: HTTP answers map to the translog error classes (400/413/415 ``MalformedError`` family,
401 ``AuthError``, 403 ``ForbiddenError``, 404 ``NotFoundError``, 409 ``ConflictError``,
429/503/507 ``PushbackError``); transport failures (aiohttp errors, timeouts, oversized
answers) are ``NetworkError``, mapped here and only here. Malformed data from the log is a
``VerificationError``, so a ``MalformedError`` from a submission always means the log refused
the request. Requests are retried on transport errors, 5xx and 429 with exponential backoff and
full jitter, honouring ``Retry-After``; submissions always carry idempotency keys (a uuid4 when
the caller gives none), so a retry never adds an entry twice.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import email.utils
import fcntl
import json
import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDictProxy

from translog import __version__
from translog.checkpoint import Checkpoint, open_checkpoint
from translog.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    InconsistencyError,
    InvalidProofError,
    MalformedError,
    NetworkError,
    NotFoundError,
    PushbackError,
    TooLargeError,
    TranslogError,
    VerificationError,
)
from translog.leaf import KIND_COMMITTED, decode_leaf, verify_payload
from translog.merkle import (
    HASH_SIZE,
    leaf_hash,
    prove_consistency,
    prove_inclusion,
    prove_range,
    tree_hash,
    verify_consistency,
    verify_inclusion,
    verify_range,
)
from translog.note import MAX_NOTE_SIZE, decode_base64
from translog.policy import WitnessPolicy
from translog.proof import TlogProof
from translog.receipt import (
    Promise,
    Receipt,
    parse_promise,
    parse_receipt,
    verify_promise,
    verify_receipt,
)
from translog.signing import NoteVerifier, parse_vkey
from translog.tiles import TILE_WIDTH, TileHashReader, TileRef, decode_bundle

__all__ = ["LogClient", "SyncLogClient", "VerifiedCheckpoint"]

T = TypeVar("T")

MAX_RESPONSE_BYTES = 64 << 20
"""Largest answer read from the log (receipts, JSON); tiles and bundles have tighter limits."""
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + 0xFFFF)
PUBLISH_WAIT = 10.0
"""Seconds :meth:`LogClient.prove` and :meth:`LogClient.entry` wait for a checkpoint covering
a fresh entry (capped by the client's timeout)."""
_WAITS = ("durable", "published")
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_STATUS_ERRORS: dict[int, type[TranslogError]] = {
    400: MalformedError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    415: MalformedError,
    422: MalformedError,
}
_PUSHBACK_STATUSES = frozenset({429, 503, 507})
_MAX_CONCURRENT_FETCHES = 8
_BUNDLES_PER_STEP = 4
"""Bundles verified per range proof in :meth:`LogClient.leaves` (bounds memory: a bundle can
hold up to 16 MiB)."""
_CACHE_BYTES = 32 << 20
_CAS_ATTEMPTS = 5
_USER_AGENT = f"translog-client/{__version__}"


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose log signature, witness policy and consistency were verified."""

    checkpoint: Checkpoint
    note: bytes
    """The signed note exactly as served (the evidence, and what proof files embed)."""
    cosigners: frozenset[str]
    """Names of the policy's witnesses whose cosignatures verified (empty without a policy)."""

    @property
    def size(self) -> int:
        """Tree size."""
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        """Root hash."""
        return self.checkpoint.root_hash


@dataclass(frozen=True, slots=True)
class _Trusted:
    """A checkpoint whose log signature verified: size, root and signed note."""

    size: int
    root_hash: bytes
    note: bytes


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _TileProof:
    """A consistency proof computed from tiles, the two roots they give, and the tiles."""

    proof: tuple[bytes, ...]
    old_root: bytes
    new_root: bytes
    tiles: dict[TileRef, bytes]


class _TooLargeAnswer(NetworkError):
    """An answer longer than the limit for its kind; retrying would not help."""


@contextlib.contextmanager
def _served(what: str) -> Iterator[None]:
    """Report malformed data from the log as a verification failure naming ``what``."""
    try:
        yield
    except MalformedError as e:
        raise VerificationError(f"the log served a malformed {what}: {e}") from e


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- state file


class _State:
    """The last verified checkpoint per origin: in memory, or in a JSON state file.

    ``replace`` is a compare-and-swap, so two clients sharing the file never overwrite a
    checkpoint that the other verified without checking theirs against it first.
    """

    def __init__(self, path: Path | None, verifier: NoteVerifier) -> None:
        self.path = path
        self._verifier = verifier
        self._memory: dict[str, _Trusted] = {}
        self._lock = threading.Lock()

    def get(self, origin: str) -> _Trusted | None:
        """The trusted checkpoint for ``origin``, or None."""
        if self.path is None:
            return self._memory.get(origin)
        raw = self._read().get(origin)
        return None if raw is None else self._decode(origin, raw)

    def replace(self, origin: str, expected: _Trusted | None, new: _Trusted) -> bool:
        """Store ``new`` if ``origin`` still maps to ``expected``; False if it changed."""
        with self._lock:
            if self.path is None:
                if self._memory.get(origin) != expected:
                    return False
                self._memory[origin] = new
                return True
            with self._file_lock():
                logs = self._read()
                raw = logs.get(origin)
                current = None if raw is None else self._decode(origin, raw)
                if current != expected:
                    return False
                logs[origin] = {
                    "size": new.size,
                    "root_hash": _b64(new.root_hash),
                    "note": new.note.decode("utf-8"),
                }
                self._write(logs)
                return True

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        assert self.path is not None
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError(f"couldn't open state lock file {lock_path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"couldn't read state file {self.path}: {e}") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise MalformedError(f"state file {self.path} is not JSON: {e.msg}") from e
        logs = data.get("logs") if isinstance(data, dict) else None
        if not isinstance(logs, dict):
            raise MalformedError(f"state file {self.path}: expected an object with 'logs'")
        return logs

    def _decode(self, origin: str, raw: object) -> _Trusted:
        """Parse one entry and re-verify its note, so the file cannot be edited silently."""
        where = f"state file {self.path}: log {origin!r}"
        if not isinstance(raw, dict) or not isinstance(raw.get("note"), str):
            raise MalformedError(f"{where}: expected an object with size, root_hash and note")
        note = raw["note"].encode("utf-8")
        try:
            cp, _, _ = open_checkpoint(note, self._verifier)
        except TranslogError as e:
            raise VerificationError(f"{where}: the stored note does not verify: {e}") from e
        if raw.get("size") != cp.size or raw.get("root_hash") != _b64(cp.root_hash):
            raise VerificationError(f"{where}: size or root_hash differ from the signed note")
        return _Trusted(cp.size, cp.root_hash, note)

    def _write(self, logs: dict[str, Any]) -> None:
        assert self.path is not None
        data = json.dumps({"logs": logs}, indent=1, sort_keys=True).encode("utf-8")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"couldn't write state file {self.path}: {e.strerror}") from e


class _TileCache:
    """Verified tiles and bundles (immutable once served), LRU within a byte budget."""

    def __init__(self, budget: int = _CACHE_BYTES) -> None:
        self._items: collections.OrderedDict[TileRef, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._budget = budget

    def get(self, ref: TileRef) -> bytes | None:
        data = self._items.get(ref)
        if data is not None:
            self._items.move_to_end(ref)
        return data

    def add(self, tiles: Mapping[TileRef, bytes]) -> None:
        for ref, data in tiles.items():
            if ref not in self._items:
                self._items[ref] = data
                self._bytes += len(data)
        while self._bytes > self._budget and self._items:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)


# ------------------------------------------------------------------------------- client


class LogClient:
    """Asynchronous client for one translog log; every answer is verified before it returns.

    ``url`` is the log's base URL including any prefix (``https://host/log1``); ``vkey`` its
    verifier key, whose name is the origin. ``token`` (scope ``submit``) authenticates
    submissions, ``read_token`` (scope ``read``) reads of private trees and committed payloads.
    ``state_path`` persists the last verified checkpoint per log (see the module docstring);
    without it the client remembers only for its own lifetime. ``policy`` adds a witness quorum
    to every checkpoint from ``/checkpoint``. ``timeout`` bounds each HTTP request and
    ``retries`` the retries after a failed one. A ``session`` passed in is not closed.
    """

    backoff_base = 0.1
    """First retry delay bound in seconds; doubles per attempt (full jitter)."""
    backoff_max = 10.0
    """Largest delay between retries, ``Retry-After`` included."""

    def __init__(
        self,
        url: str,
        vkey: str,
        *,
        token: str | None = None,
        read_token: str | None = None,
        state_path: str | Path | None = None,
        policy: WitnessPolicy | None = None,
        use_ct_api: bool = False,
        timeout: float = 30.0,
        retries: int = 5,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Create a client; no request is made until a method is called."""
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"log url must start with http:// or https://, got {url[:64]!r}")
        if timeout <= 0 or retries < 0:
            raise ConfigError(
                f"timeout must be positive and retries >= 0, got {timeout}, {retries}"
            )
        self.url = url.rstrip("/")
        self.vkey = vkey
        self._verifier = parse_vkey(vkey)
        self._token = token
        self._read_token = read_token
        self._state = _State(None if state_path is None else Path(state_path), self._verifier)
        self._policy = policy
        self._witnesses: tuple[NoteVerifier, ...] = (
            tuple(policy.witnesses.values()) if policy else ()
        )
        self._use_ct = use_ct_api
        self._timeout = timeout
        self._retries = retries
        self._session = session
        self._own_session = session is None
        self._cache = _TileCache()
        self._fetch_slots = asyncio.Semaphore(_MAX_CONCURRENT_FETCHES)

    @property
    def origin(self) -> str:
        """The log's origin: the name of its verifier key."""
        return self._verifier.name

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> LogClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- transport ------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": _USER_AGENT})
        return self._session

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: Mapping[str, str],
        limit: int,
    ) -> _Response:
        """One HTTP exchange; every transport failure becomes a NetworkError."""
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with self._http().request(
                method,
                self.url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                body = await _read_limited(resp, limit, f"{method} {path}")
                return _Response(resp.status, resp.headers, body)
        except (aiohttp.ClientError, TimeoutError) as e:
            detail = str(e) or type(e).__name__
            raise NetworkError(f"{method} {path}: {detail}") from e

    async def _request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: str | None = None,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> _Response:
        """Send with retries on transport errors, 5xx and 429; map other statuses to errors.

        Only idempotent requests come here: reads, and submissions with idempotency keys.
        """
        all_headers = dict(headers or {})
        if auth is not None:
            all_headers["Authorization"] = f"Bearer {auth}"
        attempt = 0
        while True:
            try:
                resp = await self._send(
                    method, path, params=params, data=data, headers=all_headers, limit=limit
                )
            except _TooLargeAnswer:
                raise
            except NetworkError:
                if attempt >= self._retries:
                    raise
                delay = self._backoff(attempt, None)
            else:
                if resp.status in ok:
                    return resp
                if resp.status not in _RETRY_STATUSES or attempt >= self._retries:
                    raise _status_error(method, path, resp)
                delay = self._backoff(attempt, _retry_after(resp))
            attempt += 1
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; a server's Retry-After wins when it is given."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

    async def _get_json(
        self, path: str, what: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        resp = await self._request("GET", path, params=params, auth=self._read_token)
        return _json_object(resp.body, what)

    # -- checkpoints and consistency ------------------------------------------------------

    async def checkpoint(self) -> VerifiedCheckpoint:
        """Fetch ``/checkpoint``, verify its signatures and policy, and check consistency.

        Raises ``InconsistencyError`` if the log rolled back or forked relative to the last
        checkpoint this client (or another sharing the state file) verified; stores it if newer.
        """
        resp = await self._request("GET", "/checkpoint", auth=self._read_token, limit=MAX_NOTE_SIZE)
        verified = self._open(resp.body)
        seen = _Trusted(verified.size, verified.root_hash, resp.body)
        await self._reconcile(seen, ct=self._use_ct)
        return verified

    def _open(self, note: bytes) -> VerifiedCheckpoint:
        """Verify the log's signature (and witness policy) on a checkpoint note."""
        with _served("checkpoint"):
            cp, parsed, _ = open_checkpoint(note, self._verifier, others=self._witnesses)
        cosigners: set[str] = set()
        if self._policy is not None:
            cosigners = self._policy.verify(parsed.text, parsed.signatures)
        return VerifiedCheckpoint(cp, note, frozenset(cosigners))

    async def _reconcile(self, seen: _Trusted, *, ct: bool) -> None:
        """Check ``seen`` against the stored checkpoint; store it when it is newer."""
        origin = self.origin
        for _ in range(_CAS_ATTEMPTS):
            trusted = self._state.get(origin)
            if trusted is not None:
                await self._check_consistent(trusted, seen, ct=ct)
                if seen.size <= trusted.size:
                    return
            if self._state.replace(origin, trusted, seen):
                return
        raise ConflictError(
            f"state file {self._state.path} changed {_CAS_ATTEMPTS} times while checking "
            f"the checkpoint of size {seen.size}"
        )

    async def _check_consistent(self, trusted: _Trusted, seen: _Trusted, *, ct: bool) -> None:
        """Raise ``InconsistencyError`` unless ``seen`` and ``trusted`` can both be true."""
        if seen.size == trusted.size:
            if seen.root_hash != trusted.root_hash:
                raise InconsistencyError(
                    f"the log signed two different roots for tree size {seen.size}",
                    older=trusted.note,
                    newer=seen.note,
                    proof=[],
                )
        elif seen.size > trusted.size:
            await self._check_growth(trusted, seen, ct=ct)
        else:
            await self._check_prefix(trusted, seen)

    async def _check_growth(self, old: _Trusted, new: _Trusted, *, ct: bool) -> None:
        """``new`` must extend ``old``: verify a consistency proof between them."""
        if old.size == 0:
            return  # the empty tree is a prefix of every tree
        if ct:
            proof = await self._ct_consistency(old.size, new.size)
            try:
                verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
            except InvalidProofError as e:
                raise _fork(old, new, list(proof), e) from e
            return
        try:
            found = await self._tile_consistency(old.size, new.size)
        except NotFoundError as e:
            raise VerificationError(
                f"the log signed tree size {new.size} but does not serve its tiles: {e}"
            ) from e
        self._judge(old, new, found, new_is_seen=True)

    async def _check_prefix(self, trusted: _Trusted, seen: _Trusted) -> None:
        """``seen`` is smaller: the log must still prove it a prefix of the trusted tree."""
        try:
            found = await self._tile_consistency(seen.size, trusted.size)
        except NotFoundError as e:
            raise InconsistencyError(
                f"rollback: the log presents tree size {seen.size}, this client verified size "
                f"{trusted.size}, and the log no longer serves that tree ({e})",
                older=trusted.note,
                newer=seen.note,
                proof=[],
            ) from e
        self._judge(seen, trusted, found, new_is_seen=False)

    def _judge(self, old: _Trusted, new: _Trusted, found: _TileProof, *, new_is_seen: bool) -> None:
        """Verify a consistency proof made from tiles; tell bad tiles from a fork.

        The tiles must rebuild ``new``'s signed root, or they are not the log's tree
        (``VerificationError``). If they do, and the proof joins the root they give for the
        first ``old.size`` leaves to ``new``'s root, a different signed ``old`` root is a
        fork, proven by the proof. ``new_is_seen`` says which checkpoint was just received.
        """
        if found.new_root != new.root_hash:
            raise VerificationError(
                f"the log's tiles for tree size {new.size} do not match its signed root"
            )
        if old.size > 0:
            try:
                verify_consistency(old.size, new.size, old.root_hash, new.root_hash, found.proof)
            except InvalidProofError as e:
                try:
                    verify_consistency(
                        old.size, new.size, found.old_root, new.root_hash, found.proof
                    )
                except InvalidProofError as bad:
                    raise VerificationError(
                        f"the log's tiles do not prove tree size {old.size} a prefix of tree "
                        f"size {new.size}: {bad}"
                    ) from bad
                older, newer = (old, new) if new_is_seen else (new, old)
                raise _fork(older, newer, list(found.proof), e) from e
        self._cache.add(found.tiles)

    async def _tile_consistency(self, old_size: int, new_size: int) -> _TileProof:
        """The consistency proof and both roots, all computed from the tiles of ``new_size``."""

        def compute(reader: TileHashReader) -> tuple[tuple[bytes, ...], bytes, bytes]:
            proof = prove_consistency(old_size, new_size, reader) if old_size else ()
            return proof, tree_hash(old_size, reader), tree_hash(new_size, reader)

        (proof, old_root, new_root), tiles = await self._with_tiles(new_size, compute)
        return _TileProof(proof, old_root, new_root, tiles)

    async def _ct_consistency(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        obj = await self._get_json(
            "/ct/v1/get-sth-consistency",
            "consistency proof",
            {"first": str(old_size), "second": str(new_size)},
        )
        return _hash_list(obj, "consistency", "consistency proof")

    # -- tiles ----------------------------------------------------------------------------

    async def tile(self, ref: TileRef) -> bytes:
        """Fetch one hash tile or entry bundle, checked for its exact length or entry count.

        A tile alone proves nothing: the verified calls (proofs, :meth:`leaves`) authenticate
        the tiles they use against a checkpoint.
        """
        cached = self._cache.get(ref)
        return cached if cached is not None else await self._fetch_tile(ref)

    async def _fetch_tile(self, ref: TileRef) -> bytes:
        limit = MAX_BUNDLE_BYTES if ref.entries else ref.width * HASH_SIZE
        async with self._fetch_slots:
            resp = await self._request("GET", "/" + ref.path, auth=self._read_token, limit=limit)
        data = resp.body
        if ref.entries:
            with _served(f"entry bundle {ref.path}"):
                count = len(decode_bundle(data))
            if count != ref.width:
                raise VerificationError(
                    f"entry bundle {ref.path} holds {count} entries, expected {ref.width}"
                )
        elif len(data) != ref.width * HASH_SIZE:
            raise VerificationError(
                f"tile {ref.path} has wrong length: expected {ref.width * HASH_SIZE}, "
                f"got {len(data)}"
            )
        return data

    async def _fetch_all(self, refs: Sequence[TileRef]) -> dict[TileRef, bytes]:
        """Fetch tiles concurrently (cached ones from the cache); raise the first failure."""
        out: dict[TileRef, bytes] = {}
        missing: list[TileRef] = []
        for ref in dict.fromkeys(refs):
            cached = self._cache.get(ref)
            if cached is None:
                missing.append(ref)
            else:
                out[ref] = cached
        results = await asyncio.gather(
            *(self._fetch_tile(r) for r in missing), return_exceptions=True
        )
        for ref, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            out[ref] = result
        return out

    async def _with_tiles(
        self, size: int, compute: Callable[[TileHashReader], T]
    ) -> tuple[T, dict[TileRef, bytes]]:
        """Run ``compute`` over the tiles of the tree of ``size``, fetching them all first.

        A dry run over zero hashes lists the tiles ``compute`` reads; they are fetched
        concurrently, then ``compute`` runs for real. The caller verifies the result and only
        then caches the tiles.
        """
        wanted: dict[TileRef, None] = {}

        def record(ref: TileRef) -> bytes:
            wanted[ref] = None
            return bytes(ref.width * HASH_SIZE)

        compute(TileHashReader(size, record))
        tiles = await self._fetch_all(list(wanted))
        with _served(f"tile for tree size {size}"):
            return compute(TileHashReader(size, tiles.__getitem__)), tiles

    # -- proofs ---------------------------------------------------------------------------

    async def inclusion_proof(
        self,
        index: int,
        size: int,
        *,
        leaf_hash: bytes | None = None,
        root_hash: bytes | None = None,
    ) -> tuple[bytes, ...]:
        """The inclusion proof of leaf ``index`` in the tree of ``size`` (tiles or CT API).

        With ``leaf_hash`` and ``root_hash`` (from a verified checkpoint) it is verified
        (``InvalidProofError``); without them only its shape is checked. :meth:`prove` and
        :meth:`entry` are the verified high-level calls.
        """
        if self._use_ct:
            proof = await self._ct_inclusion(index, size)
            if leaf_hash is not None and root_hash is not None:
                verify_inclusion(leaf_hash, index, size, proof, root_hash)
            return proof
        proof, tiles = await self._with_tiles(size, lambda r: prove_inclusion(index, size, r))
        if leaf_hash is not None and root_hash is not None:
            verify_inclusion(leaf_hash, index, size, proof, root_hash)
            self._cache.add(tiles)
        return proof

    async def consistency_proof(
        self,
        old_size: int,
        new_size: int,
        *,
        old_root: bytes | None = None,
        new_root: bytes | None = None,
    ) -> tuple[bytes, ...]:
        """The consistency proof from ``old_size`` to ``new_size`` (tiles or CT API).

        With both roots (from verified checkpoints) it is verified (``InvalidProofError``);
        without them only its shape is checked. :meth:`checkpoint` is the verified call.
        """
        if old_size <= 0 or old_size > new_size:
            raise MalformedError(f"no consistency proof from size {old_size} to {new_size}")
        if self._use_ct:
            proof = await self._ct_consistency(old_size, new_size)
            if old_root is not None and new_root is not None:
                verify_consistency(old_size, new_size, old_root, new_root, proof)
            return proof
        found = await self._tile_consistency(old_size, new_size)
        if old_root is not None and new_root is not None:
            verify_consistency(old_size, new_size, old_root, new_root, found.proof)
            self._cache.add(found.tiles)
        return found.proof

    async def _ct_inclusion(self, index: int, size: int) -> tuple[bytes, ...]:
        obj = await self._get_json(
            "/ct/v1/get-entry-and-proof",
            "entry and proof",
            {"leaf_index": str(index), "tree_size": str(size)},
        )
        return _hash_list(obj, "audit_path", "entry and proof")

    async def _verified_inclusion(
        self, index: int, lh: bytes, cp: VerifiedCheckpoint
    ) -> tuple[bytes, ...]:
        """An inclusion proof of ``lh`` at ``index`` that verifies against ``cp``."""
        try:
            return await self.inclusion_proof(index, cp.size, leaf_hash=lh, root_hash=cp.root_hash)
        except InvalidProofError as e:
            source = "ct api" if self._use_ct else "tiles"
            raise InvalidProofError(
                f"the inclusion proof of entry {index} from the log's {source} does not match "
                f"the checkpoint of size {cp.size}: {e}"
            ) from e

    # -- submissions ----------------------------------------------------------------------

    async def submit(
        self,
        payload: bytes,
        *,
        kind: str | None = None,
        idempotency_key: str | None = None,
        wait: str = "durable",
    ) -> Receipt:
        """Submit one payload; return its receipt once verified and consistent with the state.

        ``kind`` is ``committed`` or ``inline`` (default: the log's); ``wait`` is ``durable``
        or ``published``. Without an ``idempotency_key`` a uuid4 is used, so retries are safe.
        """
        key = idempotency_key or _new_key()
        resp = await self._request(
            "POST",
            "/add",
            params=_submit_params(wait, kind),
            data=payload,
            headers={"Idempotency-Key": key, "Content-Type": "application/octet-stream"},
            auth=self._token,
        )
        with _served("receipt"):
            receipt = parse_receipt(_json_object(resp.body, "receipt"))
            verify_receipt(receipt, self.vkey, payload)
        await self._reconcile_note(receipt.checkpoint)
        return receipt

    async def submit_batch(
        self,
        payloads: Sequence[bytes],
        *,
        kind: str | None = None,
        idempotency_keys: Sequence[str] | None = None,
        wait: str = "durable",
    ) -> Receipt:
        """Submit payloads in one NDJSON request; return the verified batch receipt.

        ``idempotency_keys`` gives one key per payload (default: a uuid4 each).
        """
        if not payloads:
            raise MalformedError("a batch needs at least one payload")
        keys = list(idempotency_keys) if idempotency_keys is not None else None
        if keys is None:
            keys = [_new_key() for _ in payloads]
        if len(keys) != len(payloads):
            raise MalformedError(f"{len(keys)} idempotency keys for {len(payloads)} payloads")
        body = b"".join(
            json.dumps({"payload_b64": _b64(p), "idempotency_key": k}).encode() + b"\n"
            for p, k in zip(payloads, keys, strict=True)
        )
        resp = await self._request(
            "POST",
            "/add-batch",
            params=_submit_params(wait, kind),
            data=body,
            headers={"Content-Type": "application/x-ndjson"},
            auth=self._token,
        )
        with _served("batch receipt"):
            receipt = parse_receipt(_json_object(resp.body, "batch receipt"))
            verify_receipt(receipt, self.vkey, payloads=payloads)
        await self._reconcile_note(receipt.checkpoint)
        return receipt

    async def promise(
        self, payload: bytes, *, kind: str | None = None, idempotency_key: str | None = None
    ) -> Promise:
        """Submit with ``?wait=0``; return the log's signed promise once verified."""
        key = idempotency_key or _new_key()
        params = {"wait": "0", **({"kind": kind} if kind is not None else {})}
        resp = await self._request(
            "POST",
            "/add",
            ok=(202,),
            params=params,
            data=payload,
            headers={"Idempotency-Key": key, "Content-Type": "application/octet-stream"},
            auth=self._token,
        )
        with _served("promise"):
            promise = parse_promise(_json_object(resp.body, "promise"))
            verify_promise(promise, self.vkey)
            verify_payload(promise.leaf, payload, promise.salt)
        return promise

    async def _reconcile_note(self, note: bytes) -> None:
        """Check a receipt's checkpoint against the state (always from tiles, see module doc)."""
        with _served("receipt checkpoint"):
            cp, _, _ = open_checkpoint(note, self._verifier)
        await self._reconcile(_Trusted(cp.size, cp.root_hash, note), ct=False)

    # -- entries --------------------------------------------------------------------------

    async def leaves(
        self, start: int, end: int, *, checkpoint: VerifiedCheckpoint | None = None
    ) -> list[bytes]:
        """The leaves ``[start, end)`` from entry bundles, proven in a verified checkpoint.

        Each group of bundles is authenticated by a range proof (computed from tiles) that
        rebuilds the checkpoint's root from the leaves' own hashes, so no leaf outside the
        verified tree is ever returned. Default checkpoint: :meth:`checkpoint`.
        """
        cp = checkpoint if checkpoint is not None else await self.checkpoint()
        if not 0 <= start <= end <= cp.size:
            raise MalformedError(
                f"leaf range [{start}, {end}) is outside the checkpoint of size {cp.size}"
            )
        if start == end:
            return []
        out: list[bytes] = []
        step = _BUNDLES_PER_STEP * TILE_WIDTH
        first = start - start % TILE_WIDTH
        for lo in range(first, end, step):
            entries = await self._verified_bundles(lo, min(lo + step, end), cp)
            out += entries[max(start - lo, 0) : end - lo]
        return out

    async def _verified_bundles(self, lo: int, end: int, cp: VerifiedCheckpoint) -> list[bytes]:
        """Every leaf of the bundles covering ``[lo, end)`` (``lo`` tile-aligned), verified."""
        size = cp.size
        refs = [
            TileRef(0, n, min(TILE_WIDTH, size - n * TILE_WIDTH), entries=True)
            for n in range(lo // TILE_WIDTH, (end - 1) // TILE_WIDTH + 1)
        ]
        bundles = await self._fetch_all(refs)
        entries = [e for ref in refs for e in decode_bundle(bundles[ref])]
        hi = lo + len(entries)
        proof, tiles = await self._with_tiles(size, lambda r: prove_range(lo, hi, size, r))
        try:
            verify_range(lo, hi, size, [leaf_hash(e) for e in entries], proof, cp.root_hash)
        except InvalidProofError as e:
            raise VerificationError(
                f"entry bundles for leaves [{lo}, {hi}) do not match the checkpoint of size "
                f"{size}: {e}"
            ) from e
        self._cache.add({**bundles, **tiles})
        return entries

    async def entry(self, index: int) -> dict[str, Any]:
        """``GET /entries/<index>`` (with the read token), verified.

        The leaf must hash to ``leaf_hash`` and be included at ``index`` in a verified
        checkpoint; a payload, when present, must match the leaf (with the salt for a
        committed leaf). Returns ``index``, ``leaf``, ``leaf_hash``, ``timestamp``, ``kind``
        (``inline``/``committed``), ``payload`` and ``salt`` (bytes or None) and ``erased``.
        """
        if index < 0:
            raise MalformedError(f"entry index must be >= 0, got {index}")
        obj = await self._get_json(f"/entries/{index}", f"entry {index}")
        with _served(f"entry {index}"):
            entry = _parse_entry(obj, index)
        cp = await self._covering(index)
        await self._verified_inclusion(index, entry["leaf_hash"], cp)
        return entry

    async def find_index(self, leaf_hash: bytes) -> int:
        """The index of the leaf with this hash (CT ``get-proof-by-hash``), proven included."""
        if len(leaf_hash) != HASH_SIZE:
            raise MalformedError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        cp = await self.checkpoint()
        if cp.size == 0:
            raise NotFoundError("the log is empty")
        obj = await self._get_json(
            "/ct/v1/get-proof-by-hash",
            "proof by hash",
            {"hash": _b64(leaf_hash), "tree_size": str(cp.size)},
        )
        index = obj.get("leaf_index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise VerificationError("the log served a malformed proof by hash: no leaf_index")
        path = _hash_list(obj, "audit_path", "proof by hash")
        try:
            verify_inclusion(leaf_hash, index, cp.size, path, cp.root_hash)
        except InvalidProofError as e:
            raise InvalidProofError(
                f"the log's proof by hash for index {index} does not verify: {e}"
            ) from e
        return index

    async def prove(self, index: int) -> TlogProof:
        """A c2sp tlog-proof for entry ``index`` (extra data = its leaf), already verified.

        The checkpoint is the latest verified one (signature, policy, consistency); a fresh
        entry is waited for until a published checkpoint covers it (:data:`PUBLISH_WAIT`).
        """
        cp = await self._covering(index)
        leaf = (await self.leaves(index, index + 1, checkpoint=cp))[0]
        proof = await self._verified_inclusion(index, leaf_hash(leaf), cp)
        return TlogProof(index, proof, cp.note, extra=leaf)

    async def first_index_at_or_after(
        self, timestamp_ms: int, *, checkpoint: VerifiedCheckpoint
    ) -> int:
        """The first index whose leaf timestamp is >= ``timestamp_ms`` (``size`` if none).

        Binary search over verified leaves; leaf timestamps never decrease along the log.
        """
        lo, hi = 0, checkpoint.size
        while lo < hi:
            mid = (lo + hi) // 2
            leaf = (await self.leaves(mid, mid + 1, checkpoint=checkpoint))[0]
            with _served(f"leaf {mid}"):
                ts = decode_leaf(leaf).timestamp_ms
            if ts < timestamp_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo

    async def _covering(self, index: int) -> VerifiedCheckpoint:
        """The latest verified checkpoint, waiting briefly for one that includes ``index``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self._timeout, PUBLISH_WAIT)
        delay = 0.05
        while True:
            cp = await self.checkpoint()
            if index < cp.size:
                return cp
            if loop.time() + delay > deadline:
                raise NotFoundError(
                    f"entry {index} is not in the latest checkpoint (size {cp.size})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


# ------------------------------------------------------------------------------ helpers


def _fork(old: _Trusted, new: _Trusted, proof: list[bytes], cause: Exception) -> InconsistencyError:
    return InconsistencyError(
        f"the log forked: its checkpoint of size {new.size} does not extend the checkpoint of "
        f"size {old.size} ({cause})",
        older=old.note,
        newer=new.note,
        proof=proof,
    )


def _new_key() -> str:
    return uuid.uuid4().hex


def _submit_params(wait: str, kind: str | None) -> dict[str, str]:
    if wait not in _WAITS:
        raise MalformedError(f"wait must be 'durable' or 'published', got {wait!r}")
    return {"wait": wait, **({"kind": kind} if kind is not None else {})}


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole (decompressed) body, or NetworkError once it exceeds ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise _TooLargeAnswer(f"{what}: answer of {resp.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise _TooLargeAnswer(f"{what}: answer exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(resp: _Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_error(method: str, path: str, resp: _Response) -> TranslogError:
    """The translog error for an unexpected HTTP status, with the log's reason."""
    reason = resp.body[:300].decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError):
        body = json.loads(resp.body)
        if isinstance(body, dict) and isinstance(body.get("reason"), str):
            reason = body["reason"]
    message = f"{method} {path}: http {resp.status}: {reason or 'no reason given'}"
    if resp.status in _PUSHBACK_STATUSES:
        return PushbackError(message, retry_after=_retry_after(resp) or 1.0)
    cls = _STATUS_ERRORS.get(resp.status, NetworkError)
    return cls(message)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise VerificationError(f"the log served a malformed {what}: not JSON") from e
    if not isinstance(value, dict):
        raise VerificationError(f"the log served a malformed {what}: not a JSON object")
    return value


def _b64_field(obj: Mapping[str, Any], name: str, what: str, size: int | None = None) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise VerificationError(f"the log served a malformed {what}: {name} is missing")
    try:
        raw = decode_base64(value)
    except MalformedError as e:
        raise VerificationError(f"the log served a malformed {what}: {name}: {e}") from e
    if size is not None and len(raw) != size:
        raise VerificationError(
            f"the log served a malformed {what}: {name} has {len(raw)} bytes, not {size}"
        )
    return raw


def _hash_list(obj: Mapping[str, Any], name: str, what: str) -> tuple[bytes, ...]:
    values = obj.get(name)
    if not isinstance(values, list):
        raise VerificationError(f"the log served a malformed {what}: {name} is not a list")
    return tuple(
        _b64_field({"h": v}, "h", f"{what} ({name}[{i}])", HASH_SIZE) for i, v in enumerate(values)
    )


def _parse_entry(obj: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Decode and self-check one ``/entries/<index>`` answer (inclusion is checked apart)."""
    what = f"entry {index}"
    if obj.get("index") != index:
        raise VerificationError(f"the log answered entry {obj.get('index')!r} for entry {index}")
    leaf = _b64_field(obj, "leaf", what)
    lh = _b64_field(obj, "leaf_hash", what, HASH_SIZE)
    if leaf_hash(leaf) != lh:
        raise VerificationError(f"entry {index}: leaf_hash does not match the leaf")
    decoded = decode_leaf(leaf)
    kind = "committed" if decoded.kind == KIND_COMMITTED else "inline"
    if obj.get("kind") != kind or obj.get("timestamp") != decoded.timestamp_ms:
        raise VerificationError(f"entry {index}: kind or timestamp differ from the leaf")
    payload = _b64_field(obj, "payload", what) if "payload" in obj else None
    salt = _b64_field(obj, "salt", what) if "salt" in obj else None
    if payload is not None:
        verify_payload(leaf, payload, salt)
    return {
        "index": index,
        "leaf": leaf,
        "leaf_hash": lh,
        "timestamp": decoded.timestamp_ms,
        "kind": kind,
        "payload": payload,
        "salt": salt,
        "erased": obj.get("erased") is True,
    }


# ----------------------------------------------------------------------------- blocking


class SyncLogClient:
    """A blocking :class:`LogClient`: same arguments (no session) and methods.

    It runs a private event loop in a daemon thread, so it works from any thread, including
    code whose own thread already runs an event loop. Use it as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        vkey: str,
        *,
        token: str | None = None,
        read_token: str | None = None,
        state_path: str | Path | None = None,
        policy: WitnessPolicy | None = None,
        use_ct_api: bool = False,
        timeout: float = 30.0,
        retries: int = 5,
    ) -> None:
        """Create the client and start its event loop thread."""
        self._client = LogClient(
            url,
            vkey,
            token=token,
            read_token=read_token,
            state_path=state_path,
            policy=policy,
            use_ct_api=use_ct_api,
            timeout=timeout,
            retries=retries,
        )
        self._loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._loop.run_forever, name="translog-client", daemon=True
        )
        self.thread.start()
        self._closed = False

    @property
    def client(self) -> LogClient:
        """The wrapped asynchronous client (use it only on this client's loop)."""
        return self._client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ConfigError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the session, stop the loop and join its thread."""
        if self._closed:
            return
        asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result()
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join()
        self._loop.close()

    def __enter__(self) -> SyncLogClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def checkpoint(self) -> VerifiedCheckpoint:
        """See :meth:`LogClient.checkpoint`."""
        return self._run(self._client.checkpoint())

    def submit(
        self,
        payload: bytes,
        *,
        kind: str | None = None,
        idempotency_key: str | None = None,
        wait: str = "durable",
    ) -> Receipt:
        """See :meth:`LogClient.submit`."""
        return self._run(
            self._client.submit(payload, kind=kind, idempotency_key=idempotency_key, wait=wait)
        )

    def submit_batch(
        self,
        payloads: Sequence[bytes],
        *,
        kind: str | None = None,
        idempotency_keys: Sequence[str] | None = None,
        wait: str = "durable",
    ) -> Receipt:
        """See :meth:`LogClient.submit_batch`."""
        return self._run(
            self._client.submit_batch(
                payloads, kind=kind, idempotency_keys=idempotency_keys, wait=wait
            )
        )

    def promise(
        self, payload: bytes, *, kind: str | None = None, idempotency_key: str | None = None
    ) -> Promise:
        """See :meth:`LogClient.promise`."""
        return self._run(self._client.promise(payload, kind=kind, idempotency_key=idempotency_key))

    def tile(self, ref: TileRef) -> bytes:
        """See :meth:`LogClient.tile`."""
        return self._run(self._client.tile(ref))

    def inclusion_proof(
        self,
        index: int,
        size: int,
        *,
        leaf_hash: bytes | None = None,
        root_hash: bytes | None = None,
    ) -> tuple[bytes, ...]:
        """See :meth:`LogClient.inclusion_proof`."""
        return self._run(
            self._client.inclusion_proof(index, size, leaf_hash=leaf_hash, root_hash=root_hash)
        )

    def consistency_proof(
        self,
        old_size: int,
        new_size: int,
        *,
        old_root: bytes | None = None,
        new_root: bytes | None = None,
    ) -> tuple[bytes, ...]:
        """See :meth:`LogClient.consistency_proof`."""
        return self._run(
            self._client.consistency_proof(old_size, new_size, old_root=old_root, new_root=new_root)
        )

    def leaves(
        self, start: int, end: int, *, checkpoint: VerifiedCheckpoint | None = None
    ) -> list[bytes]:
        """See :meth:`LogClient.leaves`."""
        return self._run(self._client.leaves(start, end, checkpoint=checkpoint))

    def entry(self, index: int) -> dict[str, Any]:
        """See :meth:`LogClient.entry`."""
        return self._run(self._client.entry(index))

    def find_index(self, leaf_hash: bytes) -> int:
        """See :meth:`LogClient.find_index`."""
        return self._run(self._client.find_index(leaf_hash))

    def prove(self, index: int) -> TlogProof:
        """See :meth:`LogClient.prove`."""
        return self._run(self._client.prove(index))

    def first_index_at_or_after(self, timestamp_ms: int, *, checkpoint: VerifiedCheckpoint) -> int:
        """See :meth:`LogClient.first_index_at_or_after`."""
        return self._run(self._client.first_index_at_or_after(timestamp_ms, checkpoint=checkpoint))
