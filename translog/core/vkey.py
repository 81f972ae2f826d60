"""Verifier keys of every type: :func:`parse_vkey` picks the verifier class from the type byte.

It sits above :mod:`translog.core.signing` (Ed25519 notes and cosignatures) and
:mod:`translog.core.ct` (RFC 6962 tree-head signatures), which both define verifier classes,
so neither has to import the other.
"""

from __future__ import annotations

from translog.core.ct import RFC6962Verifier
from translog.core.note import KEY_TYPE_COSIGNATURE, KEY_TYPE_ED25519, KEY_TYPE_RFC6962
from translog.core.signing import (
    CosignatureVerifier,
    NoteVerifier,
    parse_vkey_fields,
    vkey_id_hex,
)
from translog.errors import MalformedError


def parse_vkey(vkey: str) -> NoteVerifier:
    """Parse a verifier key strictly and return the verifier class for its type byte.

    Rejects wrong part counts, key IDs that are not 8 lowercase hex digits, non-canonical
    base64, invalid names, unknown type bytes, wrong key lengths and mismatched key IDs.
    """
    name, type_byte, key = parse_vkey_fields(vkey)
    verifier = verifier_class(name, type_byte)(name, key)
    if vkey_id_hex(vkey) != verifier.key_id.hex():
        raise MalformedError(f"vkey for {name}: key id does not match the key")
    return verifier


def verifier_class(name: str, type_byte: int) -> type[NoteVerifier]:
    """The verifier class for a vkey type byte (Ed25519, cosignature/v1 or RFC 6962)."""
    if type_byte == KEY_TYPE_ED25519:
        return NoteVerifier
    if type_byte == KEY_TYPE_COSIGNATURE:
        return CosignatureVerifier
    if type_byte == KEY_TYPE_RFC6962:
        return RFC6962Verifier
    raise MalformedError(f"vkey for {name}: unknown key type 0x{type_byte:02x}")
