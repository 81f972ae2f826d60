"""The bodies of ``POST /add-batch`` and the idempotency key: parsed into a :class:`Batch`.

A batch is ``application/x-ndjson`` (one JSON value per line; blank lines are skipped) or
``application/json`` (one array). Each value is a base64 string, the payload, or an object
``{"payload_b64": "...", "idempotency_key": "..."}`` (the key is optional). Errors name the
line (NDJSON) or the element (JSON) at fault. An idempotency key is 1 to
:data:`MAX_KEY_LENGTH` printable ASCII characters.

Both servers parse with this module: the single-process server in its handler, the
multi-process server in its workers. This module is pure (no aiohttp, no lmdb).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from translog.errors import MalformedError, TooLargeError, UnsupportedMediaTypeError

MAX_KEY_LENGTH = 255
"""Longest idempotency key accepted, in characters."""
NDJSON = "application/x-ndjson"
JSON = "application/json"
_PLAIN_STRING = re.compile(rb'"[A-Za-z0-9+/=]*"')


@dataclass(slots=True)  # not frozen: made per request on the fast path; treat as immutable
class Batch:
    """Payloads to submit, their idempotency keys, and where each came from (for errors).

    Columns rather than one object per entry: a batch of thousands is parsed, checked and
    handed on without an allocation per entry.
    """

    payloads: list[bytes]
    keys: list[str | None] | None = None
    """One key (or None) per payload; None when no payload has a key."""
    labels: list[str] | None = None
    """Where each payload came from; None means NDJSON lines ``line 1``, ``line 2``, ..."""

    def where(self, i: int) -> str:
        """Where payload ``i`` came from, as error messages name it."""
        return f"line {i + 1}" if self.labels is None else self.labels[i]

    def __len__(self) -> int:
        return len(self.payloads)


def single(payload: bytes, key: str | None) -> Batch:
    """The batch of one ``POST /add``: the body, and its ``Idempotency-Key`` header."""
    return Batch([payload], None if key is None else [key], ["payload"])


def check_key(key: str, where: str) -> str:
    """``key`` if it is a valid idempotency key, else MalformedError naming ``where``."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise MalformedError(f"{where}: must be 1-{MAX_KEY_LENGTH} printable ASCII characters")
    return key


def parse_batch(body: bytes, content_type: str, max_entries: int) -> Batch:
    """Parse a batch body; errors name the line (NDJSON) or element (JSON)."""
    if content_type == NDJSON:
        plain = plain_ndjson(body, max_entries)
        if plain is not None:
            return Batch(plain)
        values = _ndjson_values(body, max_entries)
    elif content_type == JSON:
        values = _json_values(body, max_entries)
    else:
        raise UnsupportedMediaTypeError(
            f"content type {content_type[:64]!r}: add-batch takes {NDJSON} or {JSON}"
        )
    if not values:
        raise MalformedError("batch holds no entries")
    payloads: list[bytes] = []
    keys: list[str | None] = []
    for where, value in values:
        payload, key = _batch_item(where, value)
        payloads.append(payload)
        keys.append(key)
    has_keys = any(k is not None for k in keys)
    return Batch(payloads, keys if has_keys else None, [where for where, _ in values])


def plain_ndjson(body: bytes, max_entries: int) -> list[bytes] | None:
    """The payloads of an NDJSON batch whose every line is a plain quoted base64 string.

    The common case, decoded without a JSON decoder; payload ``i`` is on line ``i + 1``.
    None for anything else (a blank line other than the last, padded lines, objects, escapes,
    bad base64, too many or no entries): the full parser then gives its exact answer or
    error. Strict base64 decoding accepts exactly what ``b64decode(validate=True)`` after the
    plain-string check accepts.
    """
    out = []
    decode = binascii.a2b_base64
    lines = body.split(b"\n")
    if not lines[-1]:
        lines.pop()  # the body's final newline
    for line in lines:
        if len(line) < 2 or line[0] != 0x22 or line[-1] != 0x22:
            return None
        try:
            out.append(decode(line[1:-1], strict_mode=True))
        except (binascii.Error, ValueError):
            return None
    return out if 0 < len(out) <= max_entries else None


def _ndjson_values(body: bytes, max_entries: int) -> list[tuple[str, object]]:
    values: list[tuple[str, object]] = []
    for n, raw in enumerate(body.split(b"\n"), 1):
        line = raw.strip()
        if not line:
            continue
        if len(values) == max_entries:
            raise TooLargeError(f"batch holds more than {max_entries} entries (line {n})")
        if _PLAIN_STRING.fullmatch(line):
            # A quoted base64 string needs no JSON decoder.
            values.append((f"line {n}", line[1:-1].decode("ascii")))
            continue
        try:
            values.append((f"line {n}", json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as e:
            raise MalformedError(f"line {n}: not valid UTF-8 at byte {e.start}") from e
        except json.JSONDecodeError as e:
            raise MalformedError(f"line {n}: invalid JSON: {e.msg} at column {e.colno}") from e
        except RecursionError as e:
            raise MalformedError(f"line {n}: JSON nested too deeply") from e
    return values


def _json_values(body: bytes, max_entries: int) -> list[tuple[str, object]]:
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MalformedError(f"body: not valid UTF-8 at byte {e.start}") from e
    except json.JSONDecodeError as e:
        raise MalformedError(
            f"body: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from e
    except RecursionError as e:
        raise MalformedError("body: JSON nested too deeply") from e
    if not isinstance(value, list):
        raise MalformedError("body: expected a JSON array of entries")
    if len(value) > max_entries:
        raise TooLargeError(f"batch of {len(value)} entries exceeds the limit of {max_entries}")
    return [(f"element {i}", v) for i, v in enumerate(value)]


def _batch_item(where: str, value: object) -> tuple[bytes, str | None]:
    if isinstance(value, str):
        b64, key = value, None
    elif isinstance(value, dict):
        b64, key = _entry_object(where, value)
    else:
        raise MalformedError(f"{where}: expected a base64 string or an object with payload_b64")
    try:
        payload = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedError(f"{where}: payload_b64 is not valid base64") from e
    return payload, key


def _entry_object(where: str, value: dict[Any, Any]) -> tuple[str, str | None]:
    """``(payload_b64, idempotency_key)`` from a batch entry object."""
    unknown = sorted(str(k) for k in value if k not in ("payload_b64", "idempotency_key"))
    if unknown:
        raise MalformedError(f"{where}: unknown field {unknown[0][:32]!r}")
    b64 = value.get("payload_b64")
    if not isinstance(b64, str):
        raise MalformedError(f"{where}: payload_b64 must be a base64 string")
    key = value.get("idempotency_key")
    if key is None:
        return b64, None
    if not isinstance(key, str):
        raise MalformedError(f"{where}: idempotency_key must be a string")
    return b64, check_key(key, f"{where}: idempotency_key")
