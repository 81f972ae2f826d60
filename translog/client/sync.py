"""The blocking :class:`SyncLogClient`: a :class:`~translog.client.LogClient` on its own loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from translog.client.checkpoints import VerifiedCheckpoint
from translog.client.log_client import LogClient
from translog.core.policy import WitnessPolicy
from translog.core.tiles import TileRef
from translog.errors import ConfigError
from translog.formats.event_schema import Query
from translog.formats.proof import TlogProof
from translog.formats.receipt import Promise, Receipt
from translog.formats.search_proof import VerifiedPage

T = TypeVar("T")


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

    @property
    def origin(self) -> str:
        """The log's origin: the name of its verifier key."""
        return self._client.origin

    @property
    def vkey(self) -> str:
        """The log's verifier key."""
        return self._client.vkey

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

    def check_consistent(self, note: bytes) -> VerifiedCheckpoint:
        """See :meth:`LogClient.check_consistent`."""
        return self._run(self._client.check_consistent(note))

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

    def submit_event(self, event: Mapping[str, Any], *, wait: str = "durable") -> Receipt:
        """See :meth:`LogClient.submit_event`."""
        return self._run(self._client.submit_event(event, wait=wait))

    def search(
        self,
        query: Query,
        *,
        cursor: int | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> VerifiedPage:
        """See :meth:`LogClient.search`."""
        return self._run(self._client.search(query, cursor=cursor, limit=limit, order=order))

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

    def entries(
        self, start: int, end: int, *, checkpoint: VerifiedCheckpoint | None = None
    ) -> list[dict[str, Any]]:
        """See :meth:`LogClient.entries`."""
        return self._run(self._client.entries(start, end, checkpoint=checkpoint))

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
