"""Gossip: exchange checkpoints with peers over HTTP and catch a log that shows two histories.

A party (a witness or a monitor) has a :class:`View`: per log origin, the latest checkpoint it
verified itself, and, when it can see the log's tree, consistency proofs from that tree. Every
``interval`` it fetches each peer's checkpoints (``GET <peer>/gossip/v1/checkpoints``) and
compares each with its own, never trusting the peer:

1. The log's signature must verify with the key *this* party trusts for the origin; anything
   else is dropped (and counted). Unknown origins are ignored.
2. Same size: the roots must be equal. Different roots are proven misbehaviour at once.
3. Different sizes: a consistency proof *in the larger tree* is needed, plus the root it
   gives the smaller size. If the larger checkpoint is our own, the proof comes from our view;
   if it is the peer's, from the peer (``GET <peer>/gossip/v1/consistency``) and from our view
   (a monitor may reach that tree through the log). Each candidate is checked here: it must
   rebuild the larger checkpoint's signed root. A candidate that does and gives the smaller
   checkpoint's root proves consistency; one that gives another root proves the log forked.
4. When no candidate verifies, the disagreement stays *unresolved* and is retried every round;
   after ``unproven_rounds`` rounds it is written down as an ``unproven`` misbehaviour file
   with every attempt, for an operator (it is not offline proof; see
   :mod:`translog.formats.misbehaviour`).

Proven split views are written as misbehaviour files (once per pair of checkpoints) into
``misbehaviour_dir`` and listed by :meth:`Gossip.status` (``GET /gossip/v1/status``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.jsonfields import Fields, encode_base64
from translog.core.merkle import HASH_SIZE, verify_consistency
from translog.core.note import MAX_NOTE_SIZE
from translog.core.signing import NoteVerifier
from translog.errors import (
    InvalidProofError,
    MalformedError,
    NetworkError,
    NotFoundError,
    TranslogError,
)
from translog.formats.misbehaviour import (
    KIND_UNPROVEN,
    Attempt,
    ForkProof,
    Misbehaviour,
    classify,
    format_misbehaviour,
)

log = logging.getLogger("translog.gossip")

API = "/gossip/v1"
MAX_CHECKPOINTS_BODY = 16 * MAX_NOTE_SIZE
MAX_PROOF_BODY = 64 * 1024


class View(Protocol):
    """What a gossiping party verified itself."""

    def verifiers(self) -> Mapping[str, NoteVerifier]:
        """The log keys this party trusts, by origin."""
        ...

    def latest(self) -> Mapping[str, bytes]:
        """Per origin, the signed note of the latest checkpoint this party verified."""
        ...

    async def prove(
        self, origin: str, old_size: int, new_size: int
    ) -> tuple[tuple[bytes, ...], bytes] | None:
        """A consistency proof ``old_size`` → ``new_size`` in this party's view of the tree,
        and the root of the first ``old_size`` leaves there; None when it cannot."""
        ...


@dataclass
class PeerStatus:
    """What the last rounds with one peer gave."""

    ok_rounds: int = 0
    failed_rounds: int = 0
    last_error: str = ""
    last_ok_ms: int = 0
    rejected: int = 0
    """Checkpoints dropped because their log signature did not verify."""


@dataclass
class _Pending:
    rounds: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    written: bool = False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Gossip:
    """Polls peers, compares checkpoints, and writes misbehaviour files."""

    def __init__(
        self,
        view: View,
        peers: tuple[str, ...],
        *,
        name: str,
        misbehaviour_dir: Path,
        interval_ms: int = 1000,
        timeout_ms: int = 5000,
        unproven_rounds: int = 5,
        on_misbehaviour: Callable[[Misbehaviour, Path], Awaitable[None]] | None = None,
    ) -> None:
        self.view = view
        self.on_misbehaviour = on_misbehaviour
        self.peers = peers
        self.name = name
        self.misbehaviour_dir = misbehaviour_dir
        self.interval = interval_ms / 1000
        self.timeout = timeout_ms / 1000
        self.unproven_rounds = unproven_rounds
        self.peer_status = {p: PeerStatus() for p in peers}
        self.files: list[str] = []
        self.alerts: list[str] = []
        self.consistent = 0
        self.rounds = 0
        self._proven: set[tuple[str, int, bytes, int, bytes]] = set()
        self._pending: dict[tuple[str, int, bytes, int, bytes], _Pending] = {}
        self._session: aiohttp.ClientSession | None = None

    def set_peers(self, peers: tuple[str, ...]) -> None:
        """Replace the peer list (keeps the status of peers that stay)."""
        self.peers = peers
        self.peer_status = {p: self.peer_status.get(p, PeerStatus()) for p in peers}

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every peer every interval until cancelled."""
        try:
            while True:
                await self.round()
                await asyncio.sleep(self.interval)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def round(self) -> None:
        """One round: every peer in parallel."""
        self.rounds += 1
        await asyncio.gather(*(self._poll(peer) for peer in self.peers))

    async def _poll(self, peer: str) -> None:
        status = self.peer_status[peer]
        try:
            notes = await self._fetch_checkpoints(peer)
            for note in notes:
                await self.receive(note, peer)
        except (NetworkError, MalformedError) as e:
            status.failed_rounds += 1
            status.last_error = str(e)
            log.warning("gossip with %s failed: %s", peer, e)
            return
        status.ok_rounds += 1
        status.last_ok_ms = _now_ms()

    # -- comparing ---------------------------------------------------------------------

    async def receive(self, note: bytes, peer: str) -> None:
        """Check one checkpoint a peer claims to have seen against our own view."""
        verified = self._open_foreign(note, peer)
        if verified is None:
            return
        origin, foreign = verified
        own_note = self.view.latest().get(origin)
        if own_note is None:
            return
        verifier = self.view.verifiers()[origin]
        own, _, _ = open_checkpoint(own_note, verifier, origin=origin)
        await self.compare(origin, own_note, own, note, foreign, peer)

    def _open_foreign(self, note: bytes, peer: str) -> tuple[str, Checkpoint] | None:
        verifiers = self.view.verifiers()
        first = note.split(b"\n", 1)[0].decode("utf-8", "replace")
        verifier = verifiers.get(first)
        if verifier is None:
            return None  # a log we do not follow
        try:
            cp, _, _ = open_checkpoint(note, verifier, origin=first)
        except TranslogError as e:
            self.peer_status[peer].rejected += 1
            log.warning("dropped a checkpoint from %s for %s: %s", peer, first, e)
            return None
        return first, cp

    async def compare(
        self,
        origin: str,
        own_note: bytes,
        own: Checkpoint,
        foreign_note: bytes,
        foreign: Checkpoint,
        peer: str,
    ) -> None:
        """Decide whether our checkpoint and a peer's can both be true; record the outcome."""
        if own.size <= foreign.size:
            older, newer, older_note, newer_note = own, foreign, own_note, foreign_note
            ours_newer = False
        else:
            older, newer, older_note, newer_note = foreign, own, foreign_note, own_note
            ours_newer = True
        key = (origin, older.size, older.root_hash, newer.size, newer.root_hash)
        if key in self._proven:
            return
        kind = classify(older, newer, None)
        if kind is not None:
            m = Misbehaviour(origin, kind, older_note, newer_note)
            await self._record(m, key, peer, [])
            return
        if older.size == newer.size or older.size == 0:
            self._settled(key)
            return
        attempts: list[Attempt] = []
        sources = ["own view"] if ours_newer else [f"peer {peer}", "own view"]
        for source in sources:
            try:
                if source == "own view":
                    got = await self.view.prove(origin, older.size, newer.size)
                else:
                    got = await self._peer_proof(peer, origin, older.size, newer.size)
            except TranslogError as e:
                attempts.append(Attempt(source, f"no proof: {e}"))
                continue
            if got is None:
                attempts.append(Attempt(source, "cannot prove (no tree for this log)"))
                continue
            proof, old_root = got
            fork = ForkProof(older.size, newer.size, proof, old_root)
            try:
                verify_consistency(older.size, newer.size, old_root, newer.root_hash, proof)
            except InvalidProofError as e:
                attempts.append(Attempt(source, f"proof rejected: {e}"))
                continue
            if old_root == older.root_hash:
                self._settled(key)
                return
            attempts.append(Attempt(source, "proof verifies and gives another root"))
            kind = classify(older, newer, fork)
            assert kind is not None
            m = Misbehaviour(origin, kind, older_note, newer_note, fork)
            await self._record(m, key, peer, attempts)
            return
        self._unresolved(origin, key, older_note, newer_note, peer, attempts)

    def _settled(self, key: tuple[str, int, bytes, int, bytes]) -> None:
        self.consistent += 1
        self._pending.pop(key, None)

    def _unresolved(
        self,
        origin: str,
        key: tuple[str, int, bytes, int, bytes],
        older_note: bytes,
        newer_note: bytes,
        peer: str,
        attempts: list[Attempt],
    ) -> None:
        pending = self._pending.setdefault(key, _Pending())
        pending.rounds += 1
        pending.attempts = attempts
        log.warning(
            "could not yet prove %s size %d and size %d consistent (round %d): %s",
            origin,
            key[1],
            key[3],
            pending.rounds,
            "; ".join(f"{a.source}: {a.outcome}" for a in attempts),
        )
        if pending.rounds >= self.unproven_rounds and not pending.written:
            pending.written = True
            m = Misbehaviour(origin, KIND_UNPROVEN, older_note, newer_note)
            self._write(m, peer, attempts)

    async def _record(
        self,
        m: Misbehaviour,
        key: tuple[str, int, bytes, int, bytes],
        peer: str,
        attempts: list[Attempt],
    ) -> None:
        self._proven.add(key)
        self._pending.pop(key, None)
        path = self._write(m, peer, attempts)
        log.critical("SPLIT VIEW: log %s: %s; evidence in %s", m.origin, m.kind, path)
        if self.on_misbehaviour is not None:
            await self.on_misbehaviour(m, path)

    def _write(self, m: Misbehaviour, peer: str, attempts: list[Attempt]) -> Path:
        now = _now_ms()
        full = Misbehaviour(
            m.origin,
            m.kind,
            m.older,
            m.newer,
            m.consistency,
            tuple(attempts),
            detected_at=now,
            detected_by=self.name,
            peer=peer,
        )
        path = write_misbehaviour_file(self.misbehaviour_dir, full)
        self.files.append(str(path))
        self.alerts.append(f"{m.kind}: log {m.origin} ({path.name})")
        return path

    # -- peers -------------------------------------------------------------------------

    async def _get(self, url: str, limit: int) -> bytes:
        try:
            async with self._http().get(url) as resp:
                body = await resp.content.read(limit + 1)
                if resp.status == 404:
                    raise NotFoundError(f"{url}: 404")
                if resp.status != 200:
                    raise NetworkError(f"{url}: HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise NetworkError(f"{url}: {type(e).__name__}: {e}") from e
        if len(body) > limit:
            raise MalformedError(f"{url}: answer exceeds {limit} bytes")
        return body

    async def _fetch_checkpoints(self, peer: str) -> list[bytes]:
        body = await self._get(f"{peer}{API}/checkpoints", MAX_CHECKPOINTS_BODY)
        return parse_checkpoints_answer(body)

    async def _peer_proof(
        self, peer: str, origin: str, old_size: int, new_size: int
    ) -> tuple[tuple[bytes, ...], bytes] | None:
        from urllib.parse import urlencode

        query = urlencode({"origin": origin, "old": old_size, "new": new_size})
        try:
            body = await self._get(f"{peer}{API}/consistency?{query}", MAX_PROOF_BODY)
        except NotFoundError:
            return None
        return parse_proof_answer(body)

    # -- what we serve -----------------------------------------------------------------

    def checkpoints_answer(self) -> dict[str, Any]:
        """``GET /gossip/v1/checkpoints``: our latest verified checkpoint per origin."""
        notes = [n.decode("utf-8") for _, n in sorted(self.view.latest().items())]
        return {"checkpoints": notes}

    async def proof_answer(self, origin: str, old_size: int, new_size: int) -> dict[str, Any]:
        """``GET /gossip/v1/consistency``: a proof in our view (``NotFoundError`` if none)."""
        if origin not in self.view.verifiers():
            raise NotFoundError(f"this party does not follow log {origin[:100]!r}")
        if not 0 < old_size <= new_size:
            raise MalformedError(f"no consistency proof from size {old_size} to {new_size}")
        got = await self.view.prove(origin, old_size, new_size)
        if got is None:
            raise NotFoundError(f"no tree of size {new_size} for {origin} in this party's view")
        proof, old_root = got
        return {
            "old_size": old_size,
            "new_size": new_size,
            "old_root": encode_base64(old_root),
            "proof": [encode_base64(h) for h in proof],
        }

    def status(self) -> dict[str, Any]:
        """``GET /gossip/v1/status``: peers, alerts and misbehaviour files."""
        return {
            "name": self.name,
            "rounds": self.rounds,
            "consistent_comparisons": self.consistent,
            "unresolved": len(self._pending),
            "alerts": list(self.alerts),
            "misbehaviour_files": list(self.files),
            "peers": {
                p: {
                    "ok_rounds": s.ok_rounds,
                    "failed_rounds": s.failed_rounds,
                    "last_error": s.last_error,
                    "last_ok_ms": s.last_ok_ms,
                    "rejected_checkpoints": s.rejected,
                }
                for p, s in self.peer_status.items()
            },
        }


def parse_checkpoints_answer(body: bytes) -> list[bytes]:
    """``{"checkpoints": [<signed note>...]}`` from a peer (notes are verified by the caller)."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedError(f"peer checkpoints answer is not JSON: {e}") from e
    f = Fields(obj, "checkpoints answer")
    value = f.value("checkpoints")
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise MalformedError("checkpoints answer.checkpoints: expected a list of strings")
    return [str(n).encode("utf-8") for n in value]


def parse_proof_answer(body: bytes) -> tuple[tuple[bytes, ...], bytes]:
    """``{"old_size", "new_size", "old_root", "proof"}`` from a peer: (proof, old root)."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedError(f"peer proof answer is not JSON: {e}") from e
    f = Fields(obj, "proof answer")
    f.get_int("old_size")
    f.get_int("new_size")
    old_root = f.get_bytes("old_root", HASH_SIZE)
    proof = f.get_hashes("proof")
    f.done()
    return proof, old_root


def write_misbehaviour_file(directory: Path, m: Misbehaviour) -> Path:
    """Write ``misbehaviour-<origin>-<time>-<kind>.json`` (new file, fsynced); return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", m.origin).strip("_") or "log"
    now = m.detected_at or _now_ms()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1000)) + f"{now % 1000:03d}Z"
    data = format_misbehaviour(m)
    for n in range(1000):
        suffix = f"-{n}" if n else ""
        path = directory / f"misbehaviour-{safe}-{stamp}-{m.kind}{suffix}.json"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return path
    raise TranslogError(f"couldn't name a misbehaviour file in {directory}")
