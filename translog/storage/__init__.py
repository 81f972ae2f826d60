"""Storage backends. Import the concrete backend by its module path (``translog.storage.lmdb``)."""

from translog.storage.base import NewEntry, Storage, StoredCheckpoint, StoredEntry, WriteBatch

__all__ = ["NewEntry", "Storage", "StoredCheckpoint", "StoredEntry", "WriteBatch"]
