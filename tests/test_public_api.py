"""The package root's exported surface is deliberate: changing it must change this snapshot."""

import translog

SNAPSHOT = [
    "Checkpoint",
    "ConfigError",
    "InconsistencyError",
    "InvalidProofError",
    "InvalidSignatureError",
    "MalformedError",
    "NotFoundError",
    "TranslogError",
    "UnknownKeyError",
    "VerificationError",
    "__version__",
    "leaf_hash",
    "open_checkpoint",
    "parse_checkpoint",
    "parse_vkey",
    "verify_consistency",
    "verify_inclusion",
]


def test_all_matches_snapshot() -> None:
    assert sorted(translog.__all__) == SNAPSHOT


def test_every_export_exists() -> None:
    for name in translog.__all__:
        assert hasattr(translog, name), name
