"""The asynchronous :class:`LogClient`: every answer from the log is verified before it returns.

It puts together the transport (:mod:`~translog.client.transport`), tile fetching and proofs
(:mod:`~translog.client.fetcher`, :mod:`~translog.client.proofs`), the consistency rules
(:mod:`~translog.client.consistency`), the state (:mod:`~translog.client.state`) and
submissions (:mod:`~translog.client.submissions`); the package docstring has the overview.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from translog.client import consistency
from translog.client.answers import leaf_entry, served
from translog.client.checkpoints import Trusted, VerifiedCheckpoint, open_trusted, open_verified
from translog.client.entries import EntryReader
from translog.client.fetcher import TileFetcher
from translog.client.proofs import Proofs
from translog.client.state import State
from translog.client.submissions import Submitter
from translog.client.transport import Transport
from translog.core.leaf import decode_leaf
from translog.core.merkle import HASH_SIZE, leaf_hash
from translog.core.note import MAX_NOTE_SIZE
from translog.core.policy import WitnessPolicy
from translog.core.tiles import TileRef
from translog.core.vkey import parse_vkey
from translog.errors import ConflictError, MalformedError, NotFoundError
from translog.formats.event_builder import encode_event
from translog.formats.event_schema import Query, validate_event
from translog.formats.proof import TlogProof
from translog.formats.receipt import Promise, Receipt
from translog.formats.search_proof import VerifiedPage, verify_search_answer

PUBLISH_WAIT = 10.0
"""Seconds :meth:`LogClient.prove` and :meth:`LogClient.entry` wait for a checkpoint covering
a durable but not yet published entry (capped by the client's timeout)."""
_CAS_ATTEMPTS = 5


class LogClient:
    """Asynchronous client for one translog log; every answer is verified before it returns.

    ``url`` is the log's base URL including any prefix (``https://host/log1``); ``vkey`` its
    verifier key, whose name is the origin. ``token`` (scope ``submit``) authenticates
    submissions, ``read_token`` (scope ``read``) reads of private trees and committed payloads.
    ``state_path`` persists the last verified checkpoint per log (see
    :mod:`translog.client.state`); without it the client remembers only for its own lifetime.
    ``policy`` adds a witness quorum to every checkpoint from ``/checkpoint``. ``timeout``
    bounds each HTTP request and ``retries`` the retries after a failed one. A ``session``
    passed in is not closed.
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
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Create a client; no request is made until a method is called."""
        self._transport = Transport(url, timeout=timeout, retries=retries, session=session)
        self.url = self._transport.url
        self.vkey = vkey
        self._verifier = parse_vkey(vkey)
        self._read_token = read_token
        self._state = State(None if state_path is None else Path(state_path), self._verifier)
        self._policy = policy
        self._use_ct = use_ct_api
        self._fetcher = TileFetcher(self._transport, read_token)
        self._proofs = Proofs(
            self._transport, self._fetcher, read_token=read_token, use_ct=use_ct_api
        )
        self._submitter = Submitter(self._transport, vkey, token)
        self._entries = EntryReader(self._transport, read_token)

    @property
    def origin(self) -> str:
        """The log's origin: the name of its verifier key."""
        return self._verifier.name

    @property
    def backoff_base(self) -> float:
        """First retry delay bound in seconds (default 0.1); doubles per attempt (full jitter)."""
        return self._transport.backoff_base

    @backoff_base.setter
    def backoff_base(self, value: float) -> None:
        self._transport.backoff_base = value

    @property
    def backoff_max(self) -> float:
        """Largest delay between retries in seconds (default 10), ``Retry-After`` included."""
        return self._transport.backoff_max

    @backoff_max.setter
    def backoff_max(self, value: float) -> None:
        self._transport.backoff_max = value

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        await self._transport.close()

    async def __aenter__(self) -> LogClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- checkpoints and consistency ------------------------------------------------------

    async def checkpoint(self) -> VerifiedCheckpoint:
        """Fetch ``/checkpoint``, verify its signatures and policy, and check consistency.

        Raises ``InconsistencyError`` if the log rolled back or forked relative to the last
        checkpoint this client (or another sharing the state file) verified; stores it if newer.
        """
        verified = await self._fetch_checkpoint()
        await self._reconcile(Trusted.of(verified), ct=self._use_ct)
        return verified

    async def check_consistent(self, note: bytes) -> VerifiedCheckpoint:
        """Prove the signed checkpoint ``note`` consistent with the log's current checkpoint.

        ``note`` must carry the log's signature (origin = the vkey's name) and meet the witness
        policy, like every checkpoint from ``/checkpoint``. Then the rules for a stored
        checkpoint apply (:mod:`translog.client.consistency`), with ``note`` in the place of the
        stored one: an older ``note`` must be a prefix of the current tree; a newer one must
        still be served by the log, whose tiles must prove the current checkpoint a prefix of
        it (``InconsistencyError``, a rollback, if the log cannot). Returns the log's current
        checkpoint, verified. The state is neither read nor written. A malformed ``note`` is a
        ``MalformedError``.
        """
        given = open_verified(note, self._verifier, self._policy)
        current = await self._fetch_checkpoint()
        await consistency.check(
            self._proofs, Trusted.of(given), Trusted.of(current), ct=self._use_ct
        )
        return current

    async def _fetch_checkpoint(self) -> VerifiedCheckpoint:
        resp = await self._transport.request(
            "GET", "/checkpoint", auth=self._read_token, limit=MAX_NOTE_SIZE
        )
        with served("checkpoint"):
            return open_verified(resp.body, self._verifier, self._policy)

    async def _reconcile(self, seen: Trusted, *, ct: bool) -> None:
        """Check ``seen`` against the stored checkpoint; store it when it is newer."""
        for _ in range(_CAS_ATTEMPTS):
            trusted = self._state.get(self.origin)
            if trusted is not None:
                await consistency.check(self._proofs, trusted, seen, ct=ct)
                if seen.size <= trusted.size:
                    return
            if self._state.replace(self.origin, trusted, seen):
                return
        raise ConflictError(
            f"state file {self._state.path} changed {_CAS_ATTEMPTS} times while checking "
            f"the checkpoint of size {seen.size}"
        )

    async def _reconcile_note(self, note: bytes) -> None:
        """Check a receipt's checkpoint against the state (always from tiles, see proofs)."""
        await self._reconcile(open_trusted(note, self._verifier, "receipt checkpoint"), ct=False)

    # -- tiles and proofs -----------------------------------------------------------------

    async def tile(self, ref: TileRef) -> bytes:
        """Fetch one hash tile or entry bundle, checked for its exact length or entry count.

        A tile alone proves nothing: the verified calls (proofs, :meth:`leaves`) authenticate
        the tiles they use against a checkpoint.
        """
        return await self._fetcher.tile(ref)

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
        return await self._proofs.inclusion(index, size, leaf_hash=leaf_hash, root_hash=root_hash)

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
        return await self._proofs.consistency(
            old_size, new_size, old_root=old_root, new_root=new_root
        )

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
        or ``published`` (with a witness policy, a published receipt's checkpoint must meet
        it). Without an ``idempotency_key`` a uuid4 is used, so retries are safe.
        """
        receipt = await self._submitter.submit(
            payload, kind=kind, idempotency_key=idempotency_key, wait=wait
        )
        self._check_published(receipt, wait)
        await self._reconcile_note(receipt.checkpoint)
        return receipt

    async def submit_event(self, event: Mapping[str, Any], *, wait: str = "durable") -> Receipt:
        """Validate a ``translog.event/v1`` event
        (:func:`translog.formats.event_builder.build_event`
        makes one), submit it committed with its ``id`` as the idempotency key, return the
        receipt. An invalid event raises ``EventError`` naming the field, before any request."""
        validate_event(event)
        return await self.submit(
            encode_event(event), kind="committed", idempotency_key=str(event["id"]), wait=wait
        )

    async def search(
        self,
        query: Query,
        *,
        cursor: int | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> VerifiedPage:
        """One page of ``GET /events/search`` (read token scoped to the tenant), every result
        verified against the answer's signed checkpoint and checked against the query."""
        params = {k: v for k, v in query.to_json().items() if k not in ("from", "to")}
        if query.from_ms is not None:
            params["from"] = str(query.from_ms)
        if query.to_ms is not None:
            params["to"] = str(query.to_ms)
        params |= {"limit": str(limit), "order": order}
        if cursor is not None:
            params["cursor"] = str(cursor)
        answer = await self._transport.get_json(
            "/events/search", "search answer", params=params, auth=self._read_token
        )
        return verify_search_answer(answer, self.vkey, query)

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
        receipt = await self._submitter.submit_batch(
            payloads, kind=kind, idempotency_keys=idempotency_keys, wait=wait
        )
        self._check_published(receipt, wait)
        await self._reconcile_note(receipt.checkpoint)
        return receipt

    def _check_published(self, receipt: Receipt, wait: str) -> None:
        """A ``wait=published`` receipt carries the published, cosigned checkpoint: with a
        witness policy, it must meet the quorum. (``durable`` receipts carry the per-batch
        checkpoint, signed by the log alone, and are not held to the policy.)"""
        if wait == "published" and self._policy is not None:
            with served("receipt checkpoint"):
                open_verified(receipt.checkpoint, self._verifier, self._policy)

    async def promise(
        self, payload: bytes, *, kind: str | None = None, idempotency_key: str | None = None
    ) -> Promise:
        """Submit with ``?wait=0``; return the log's signed promise once verified."""
        return await self._submitter.promise(payload, kind=kind, idempotency_key=idempotency_key)

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
        return await self._proofs.leaves(start, end, cp)

    async def entries(
        self, start: int, end: int, *, checkpoint: VerifiedCheckpoint | None = None
    ) -> list[dict[str, Any]]:
        """The entries ``[start, end)`` with their payloads, proven in a verified checkpoint.

        The leaves come from :meth:`leaves` (range proofs over entry bundles), so no entry
        needs its own checkpoint or inclusion proof. An inline entry's payload is in its leaf.
        A committed entry's payload and salt are read from ``GET /entries/<index>`` with the
        read token, :data:`~translog.client.entries.ENTRY_READS` at a time, and must match the
        verified leaf. Each dict has the keys of :meth:`entry`. A refused read token raises
        ``AuthError`` or ``ForbiddenError``, as :meth:`entry` does. Default checkpoint:
        :meth:`checkpoint`.
        """
        cp = checkpoint if checkpoint is not None else await self.checkpoint()
        leaves = await self._proofs.leaves(start, end, cp)
        out = [leaf_entry(start + k, leaf) for k, leaf in enumerate(leaves)]
        await self._entries.fill_payloads([e for e in out if e["kind"] == "committed"])
        return out

    async def entry(self, index: int) -> dict[str, Any]:
        """``GET /entries/<index>`` (with the read token), verified.

        The leaf must hash to ``leaf_hash`` and be included at ``index`` in a verified
        checkpoint; a payload, when present, must match the leaf (with the salt for a
        committed leaf). Returns ``index``, ``leaf``, ``leaf_hash``, ``timestamp``, ``kind``
        (``inline``/``committed``), ``payload`` and ``salt`` (bytes or None) and ``erased``.
        For a range, :meth:`entries` needs no proof per entry.
        """
        if index < 0:
            raise MalformedError(f"entry index must be >= 0, got {index}")
        entry = await self._entries.answer(index)
        cp = await self._covering(index, durable=True)
        await self._proofs.verified_inclusion(index, entry["leaf_hash"], cp)
        return entry

    async def find_index(self, leaf_hash: bytes) -> int:
        """The index of the leaf with this hash (CT ``get-proof-by-hash``), proven included."""
        if len(leaf_hash) != HASH_SIZE:
            raise MalformedError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        cp = await self.checkpoint()
        if cp.size == 0:
            raise NotFoundError("the log is empty")
        return await self._proofs.index_of(leaf_hash, cp)

    async def prove(self, index: int) -> TlogProof:
        """A c2sp tlog-proof for entry ``index`` (extra data = its leaf), already verified.

        The checkpoint is the latest verified one (signature, policy, consistency). An entry
        the log holds but has not published yet is waited for (:data:`PUBLISH_WAIT`); an index
        the log does not hold fails at once with ``NotFoundError``.
        """
        cp = await self._covering(index)
        leaf = (await self.leaves(index, index + 1, checkpoint=cp))[0]
        proof = await self._proofs.verified_inclusion(index, leaf_hash(leaf), cp)
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
            with served(f"leaf {mid}"):
                ts = decode_leaf(leaf).timestamp_ms
            if ts < timestamp_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo

    async def _covering(self, index: int, *, durable: bool = False) -> VerifiedCheckpoint:
        """The latest verified checkpoint, waiting briefly for one that includes ``index``.

        Waiting helps only for an entry the log already holds (durable) but has not published:
        the publisher covers it within an interval. So unless the caller knows the entry is
        durable (it just read it), one ``GET /entries/<index>?leaf_only=1`` asks the log
        first; its 404 means the index is at or beyond the durable size, and the call fails
        at once instead of waiting :data:`PUBLISH_WAIT` for nothing.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self._transport.timeout, PUBLISH_WAIT)
        delay = 0.05
        cp = await self.checkpoint()
        if index < cp.size:
            return cp
        if not durable:
            await self._entries.require_held(index, cp.size)
        while index >= cp.size:
            if loop.time() + delay > deadline:
                raise NotFoundError(
                    f"entry {index} is not in the latest checkpoint (size {cp.size})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            cp = await self.checkpoint()
        return cp
