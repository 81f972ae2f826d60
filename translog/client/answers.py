"""Reading the log's answers: JSON bodies, base64 fields and entry views.

Data the log serves is evidence, not a request the client made badly, so anything malformed in
it is a :class:`~translog.errors.VerificationError` naming what was served. That keeps a
``MalformedError`` from the client meaning one thing only: the log refused the request.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from translog.core.leaf import KIND_COMMITTED, decode_leaf, verify_payload
from translog.core.merkle import HASH_SIZE, leaf_hash
from translog.core.note import decode_base64
from translog.errors import MalformedError, VerificationError


@contextlib.contextmanager
def served(what: str) -> Iterator[None]:
    """Report malformed data from the log as a verification failure naming ``what``."""
    try:
        yield
    except MalformedError as e:
        raise VerificationError(f"the log served a malformed {what}: {e}") from e


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """The JSON object in an answer body."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise VerificationError(f"the log served a malformed {what}: not JSON") from e
    if not isinstance(value, dict):
        raise VerificationError(f"the log served a malformed {what}: not a JSON object")
    return value


def b64_field(obj: Mapping[str, Any], name: str, what: str, size: int | None = None) -> bytes:
    """The canonical base64 field ``name``, optionally of exactly ``size`` bytes."""
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


def hash_list(obj: Mapping[str, Any], name: str, what: str) -> tuple[bytes, ...]:
    """The list of base64 hashes in field ``name`` (a proof)."""
    values = obj.get(name)
    if not isinstance(values, list):
        raise VerificationError(f"the log served a malformed {what}: {name} is not a list")
    return tuple(
        b64_field({"h": v}, "h", f"{what} ({name}[{i}])", HASH_SIZE) for i, v in enumerate(values)
    )


def parse_entry(obj: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Decode and self-check one ``/entries/<index>`` answer (inclusion is checked apart).

    A payload in the answer must match the answer's leaf (with the salt for a committed leaf).
    """
    what = f"entry {index}"
    if obj.get("index") != index:
        raise VerificationError(f"the log answered entry {obj.get('index')!r} for entry {index}")
    leaf = b64_field(obj, "leaf", what)
    lh = b64_field(obj, "leaf_hash", what, HASH_SIZE)
    if leaf_hash(leaf) != lh:
        raise VerificationError(f"entry {index}: leaf_hash does not match the leaf")
    decoded = decode_leaf(leaf)
    kind = "committed" if decoded.kind == KIND_COMMITTED else "inline"
    if obj.get("kind") != kind or obj.get("timestamp") != decoded.timestamp_ms:
        raise VerificationError(f"entry {index}: kind or timestamp differ from the leaf")
    payload = b64_field(obj, "payload", what) if "payload" in obj else None
    salt = b64_field(obj, "salt", what) if "salt" in obj else None
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


def leaf_entry(index: int, leaf: bytes) -> dict[str, Any]:
    """The entry view of a verified leaf, as :func:`parse_entry` gives it, before any read.

    An inline leaf holds its payload; a committed one has ``payload`` and ``salt`` None until
    they are read from the log.
    """
    with served(f"leaf {index}"):
        decoded = decode_leaf(leaf)
    committed = decoded.kind == KIND_COMMITTED
    return {
        "index": index,
        "leaf": leaf,
        "leaf_hash": leaf_hash(leaf),
        "timestamp": decoded.timestamp_ms,
        "kind": "committed" if committed else "inline",
        "payload": None if committed else decoded.payload or b"",
        "salt": None,
        "erased": False,
    }
