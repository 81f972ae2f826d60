"""The ``index`` keyspace contract, on both backends: batch puts, seeks, writes, clears."""

from __future__ import annotations

from translog.core.merkle import leaf_hash
from translog.storage.base import NewEntry, Storage, WriteBatch


def _batch(start: int, puts: list[tuple[bytes, bytes]]) -> WriteBatch:
    leaf = b"\x01" + (1).to_bytes(8, "big") + b"\x00x"
    return WriteBatch(start, [NewEntry(leaf)], [(0, start, leaf_hash(leaf))], 1, index_puts=puts)


def test_index_keyspace(storage: Storage) -> None:
    storage.append(_batch(0, [(b"p2", b""), (b"p1", b"a"), (b"e1", b"rec")]))
    with storage.index_reader() as r:
        assert r.get(b"p1") == b"a" and r.get(b"zz") is None
        assert r.seek(b"p") == (b"p1", b"a")
        assert r.seek(b"p15") == (b"p2", b"")
        assert r.seek(b"q") is None
        assert r.seek_before(b"p2") == (b"p1", b"a")
        assert r.seek_before(b"e1") is None
        assert r.seek_before(b"zz") == (b"p2", b"")
    storage.index_write([(b"p3", b"c")], [b"p1", b"missing"])
    with storage.index_reader() as r:
        assert r.get(b"p1") is None and r.get(b"p3") == b"c"
    storage.index_write([(b"p9", b"")], clear_prefix=b"p")
    with storage.index_reader() as r:
        assert r.seek(b"p") == (b"p9", b"")
        assert r.get(b"e1") == b"rec"


def test_index_write_erases_atomically(storage: Storage) -> None:
    ts = (1).to_bytes(8, "big")
    leaf = b"\x01" + ts + b"\x01" + bytes(32)
    import hashlib

    salt, payload = bytes(range(32)), b"secret"
    leaf = b"\x01" + ts + b"\x01" + hashlib.sha256(salt + payload).digest()
    storage.append(WriteBatch(0, [NewEntry(leaf, salt, payload)], [(0, 0, leaf_hash(leaf))], 1))
    assert storage.index_write([(b"e0", b"rec")], erase=[0]) == 1
    entry = storage.get_entries(0, 1)[0]
    assert entry.leaf == leaf and entry.payload is None and entry.salt is None
    assert storage.index_write(erase=[0]) == 0
    with storage.index_reader() as r:
        assert r.get(b"e0") == b"rec"
