"""translog: a tamper-evident audit log (RFC 6962 Merkle tree, signed checkpoints, tlog-tiles)."""

__version__ = "0.1.0"
