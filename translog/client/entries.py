"""Reading entries with their payloads: ``GET /entries/<index>``, checked against verified leaves.

``/entries/<index>`` serves one durable entry: its leaf, and the payload and salt of a committed
leaf to a caller whose read token allows it. The answer is self-checked
(:func:`~translog.client.answers.parse_entry`); proving its leaf in a checkpoint is the
caller's part: one inclusion proof for a single entry, or, for a range, the range proofs that
already authenticated the leaves (:meth:`EntryReader.fill_payloads`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from translog.client.answers import parse_entry, served
from translog.client.transport import Transport
from translog.errors import NotFoundError, VerificationError

ENTRY_READS = 16
"""Most ``/entries/<index>`` reads :meth:`EntryReader.fill_payloads` has in flight at once."""


class EntryReader:
    """Reads ``/entries/<index>`` from one log with the read token."""

    def __init__(self, transport: Transport, read_token: str | None) -> None:
        """Read through ``transport``."""
        self._transport = transport
        self._read_token = read_token

    async def answer(self, index: int) -> dict[str, Any]:
        """The log's answer for entry ``index``, self-checked (see :func:`parse_entry`)."""
        obj = await self._transport.get_json(
            f"/entries/{index}", f"entry {index}", auth=self._read_token
        )
        with served(f"entry {index}"):
            return parse_entry(obj, index)

    async def fill_payloads(self, entries: list[dict[str, Any]]) -> None:
        """Fill in ``payload``, ``salt`` and ``erased`` of committed entries with verified leaves.

        Up to :data:`ENTRY_READS` reads run at once; the first failure (a refused token, say)
        cancels the rest and is raised.
        """
        todo = iter(entries)

        async def worker() -> None:
            for entry in todo:
                entry.update(await self._payload_of(entry["index"], entry["leaf"]))

        workers = [asyncio.ensure_future(worker()) for _ in range(min(ENTRY_READS, len(entries)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()

    async def require_held(self, index: int, published_size: int) -> None:
        """Raise ``NotFoundError`` if entry ``index`` is at or beyond the log's durable size.

        Asks for the leaf only (``?leaf_only=1``), which needs no payload permission.
        """
        try:
            await self._transport.request(
                "GET", f"/entries/{index}", params={"leaf_only": "1"}, auth=self._read_token
            )
        except NotFoundError as e:
            raise NotFoundError(
                f"entry {index} is not in the latest checkpoint (size {published_size}) and the "
                f"log does not hold it: {e}"
            ) from e

    async def _payload_of(self, index: int, leaf: bytes) -> dict[str, Any]:
        """Payload, salt and erased of entry ``index``, whose verified leaf is ``leaf``."""
        answer = await self.answer(index)
        # parse_entry checked the payload against the answer's leaf; that leaf must be ours.
        if answer["leaf"] != leaf:
            raise VerificationError(
                f"entry {index}: the log's answer holds another leaf than its entry bundle"
            )
        return {k: answer[k] for k in ("payload", "salt", "erased")}
