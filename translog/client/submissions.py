"""Submitting entries: ``POST /add`` and ``/add-batch``, and verifying what the log answers.

Every submission carries idempotency keys (a uuid4 when the caller gives none), so the
transport may retry it without adding an entry twice. Receipts and promises are checked with
:mod:`translog.formats.receipt` against the log's vkey and the submitted payloads before they are
returned; checking a receipt's checkpoint against the client's state is the caller's part.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from translog.client.answers import json_object, served
from translog.client.transport import Transport
from translog.core.jsonfields import encode_base64
from translog.core.leaf import verify_payload
from translog.errors import MalformedError
from translog.formats.receipt import (
    Promise,
    Receipt,
    parse_promise,
    parse_receipt,
    verify_promise,
    verify_receipt,
)

_WAITS = ("durable", "published")
_OCTET_STREAM = "application/octet-stream"


class Submitter:
    """Submits to one log with the ``submit`` token; answers are verified with ``vkey``."""

    def __init__(self, transport: Transport, vkey: str, token: str | None) -> None:
        """Submit through ``transport``."""
        self._transport = transport
        self._vkey = vkey
        self._token = token

    async def submit(
        self, payload: bytes, *, kind: str | None, idempotency_key: str | None, wait: str
    ) -> Receipt:
        """Submit one payload; return its receipt once verified."""
        key = idempotency_key or _new_key()
        resp = await self._transport.request(
            "POST",
            "/add",
            params=_submit_params(wait, kind),
            data=payload,
            headers={"Idempotency-Key": key, "Content-Type": _OCTET_STREAM},
            auth=self._token,
        )
        with served("receipt"):
            receipt = parse_receipt(json_object(resp.body, "receipt"))
            verify_receipt(receipt, self._vkey, payload)
        return receipt

    async def submit_batch(
        self,
        payloads: Sequence[bytes],
        *,
        kind: str | None,
        idempotency_keys: Sequence[str] | None,
        wait: str,
    ) -> Receipt:
        """Submit payloads in one NDJSON request; return the verified batch receipt."""
        if not payloads:
            raise MalformedError("a batch needs at least one payload")
        keys = list(idempotency_keys) if idempotency_keys is not None else None
        if keys is None:
            keys = [_new_key() for _ in payloads]
        if len(keys) != len(payloads):
            raise MalformedError(f"{len(keys)} idempotency keys for {len(payloads)} payloads")
        body = b"".join(
            json.dumps({"payload_b64": encode_base64(p), "idempotency_key": k}).encode() + b"\n"
            for p, k in zip(payloads, keys, strict=True)
        )
        resp = await self._transport.request(
            "POST",
            "/add-batch",
            params=_submit_params(wait, kind),
            data=body,
            headers={"Content-Type": "application/x-ndjson"},
            auth=self._token,
        )
        with served("batch receipt"):
            receipt = parse_receipt(json_object(resp.body, "batch receipt"))
            verify_receipt(receipt, self._vkey, payloads=payloads)
        return receipt

    async def promise(
        self, payload: bytes, *, kind: str | None, idempotency_key: str | None
    ) -> Promise:
        """Submit with ``?wait=0``; return the log's signed promise once verified."""
        key = idempotency_key or _new_key()
        params = {"wait": "0", **({"kind": kind} if kind is not None else {})}
        resp = await self._transport.request(
            "POST",
            "/add",
            ok=(202,),
            params=params,
            data=payload,
            headers={"Idempotency-Key": key, "Content-Type": _OCTET_STREAM},
            auth=self._token,
        )
        with served("promise"):
            promise = parse_promise(json_object(resp.body, "promise"))
            verify_promise(promise, self._vkey)
            verify_payload(promise.leaf, payload, promise.salt)
        return promise


def _new_key() -> str:
    return uuid.uuid4().hex


def _submit_params(wait: str, kind: str | None) -> dict[str, str]:
    if wait not in _WAITS:
        raise MalformedError(f"wait must be 'durable' or 'published', got {wait!r}")
    return {"wait": wait, **({"kind": kind} if kind is not None else {})}
