"""Strict JSON field access and base64 for translog's JSON formats (receipts, bundles, entries).

:class:`Fields` reads one JSON object with typed getters and rejects unknown fields; every
error is a :class:`~translog.errors.MalformedError` naming the field's path
(``receipt.entries[2].leaf_hash: expected 32 bytes, got 31``). Binary values are standard
padded base64 (:func:`encode_base64`; decoding is strict, :func:`translog.core.note.decode_base64`).
Integers are JSON numbers in ``[0, 2^63)``. This module is pure.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from translog.core.merkle import HASH_SIZE
from translog.core.note import decode_base64
from translog.errors import MalformedError

MAX_INT = (1 << 63) - 1
"""Largest integer a field may hold (sizes, indexes and times are signed 64-bit)."""


def strict_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses duplicate keys and ``NaN``/``Infinity`` (``ValueError``)."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:40]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def encode_base64(data: bytes) -> str:
    """Standard padded base64, as every binary JSON field holds it."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


class Fields:
    """Strict typed access to one JSON object; every error names the field's path."""

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, Mapping):
            raise MalformedError(f"{path}: expected a JSON object")
        self.obj = obj
        self.path = path
        self.seen: set[str] = set()

    def value(self, name: str) -> object:
        """The raw value of a required field."""
        self.seen.add(name)
        if name not in self.obj:
            raise MalformedError(f"{self.path}.{name}: missing")
        return self.obj[name]

    def has(self, name: str) -> bool:
        """Whether the optional field ``name`` is present."""
        return name in self.obj

    def get_int(self, name: str) -> int:
        """A non-negative integer below 2^63."""
        value = self.value(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
            raise MalformedError(f"{self.path}.{name}: expected an integer in [0, 2^63)")
        return value

    def get_bool(self, name: str) -> bool:
        """A JSON boolean."""
        value = self.value(name)
        if not isinstance(value, bool):
            raise MalformedError(f"{self.path}.{name}: expected true or false")
        return value

    def get_str(self, name: str) -> str:
        """A JSON string."""
        value = self.value(name)
        if not isinstance(value, str):
            raise MalformedError(f"{self.path}.{name}: expected a string")
        return value

    def get_bytes(self, name: str, size: int | None = None) -> bytes:
        """Canonical base64, optionally of exactly ``size`` bytes."""
        return _decode(self.value(name), f"{self.path}.{name}", size)

    def get_hashes(self, name: str) -> tuple[bytes, ...]:
        """A list of base64 hashes of 32 bytes."""
        value = self.value(name)
        if not isinstance(value, list):
            raise MalformedError(f"{self.path}.{name}: expected a list")
        return tuple(_decode(h, f"{self.path}.{name}[{i}]", HASH_SIZE) for i, h in enumerate(value))

    def get_list(self, name: str) -> list[object]:
        """A non-empty JSON list."""
        value = self.value(name)
        if not isinstance(value, list) or not value:
            raise MalformedError(f"{self.path}.{name}: expected a non-empty list")
        return value

    def done(self) -> None:
        """Reject fields that were not read."""
        extra = sorted(str(k) for k in self.obj if k not in self.seen)
        if extra:
            raise MalformedError(f"{self.path}.{extra[0]}: unknown field")


def _decode(value: object, path: str, size: int | None) -> bytes:
    if not isinstance(value, str):
        raise MalformedError(f"{path}: expected a base64 string")
    try:
        raw = decode_base64(value)
    except MalformedError as e:
        raise MalformedError(f"{path}: {e}") from e
    if size is not None and len(raw) != size:
        raise MalformedError(f"{path}: expected {size} bytes, got {len(raw)}")
    return raw
