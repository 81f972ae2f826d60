"""Stores (directory and RGW), object layout, and the single-writer lease."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from tests.objstore.conftest import Gateway
from translog.core.tiles import TILE_WIDTH, tiles_for_size
from translog.errors import (
    ConfigError,
    LeaseHeldError,
    LeaseLostError,
    MalformedError,
    PreconditionFailedError,
)
from translog.publish import layout
from translog.publish.lease import Lease, LeaseRecord
from translog.publish.store import (
    DirectoryStore,
    ObjectStore,
    S3Store,
    credentials_from,
    parse_store_url,
)


@pytest.mark.parametrize("old", [0, 1, 255, 256, 257, 511, 65535, 65536, 70000])
def test_tiles_between_is_exactly_what_the_new_tree_adds(old: int) -> None:
    for new in (old, old + 1, old + 255, old + 256, old + 70_000):
        added = set(layout.tiles_between(old, new))
        assert added == set(tiles_for_size(new)) - set(tiles_for_size(old))
        bundles = set(layout.tiles_between(old, new, entries=True))
        assert bundles == set(tiles_for_size(new, entries=True)) - set(
            tiles_for_size(old, entries=True)
        )


def test_payload_bundle_and_history_round_trip() -> None:
    items = [(b"s" * 32, b"payload", True), (None, None, False), (None, None, True)]
    items.append((b"t" * 32, b"", True))
    assert layout.decode_payloads(layout.encode_payloads(items)) == items
    with pytest.raises(MalformedError, match="truncated"):
        layout.decode_payloads(layout.encode_payloads(items)[:-1][:40])
    with pytest.raises(MalformedError, match="unknown record type 7"):
        layout.decode_payloads(b"\x07")
    assert layout.decode_history(layout.encode_history(5, b"note\n")) == (5, b"note\n")
    with pytest.raises(MalformedError):
        layout.decode_history(b"x\nnote")
    assert layout.history_key(12) == "checkpoints/00000000000000000012"


def test_store_urls_and_credentials() -> None:
    assert parse_store_url("s3://my-bucket/a/b/") == ("s3", "my-bucket", "a/b")
    assert parse_store_url("file:///srv/www") == ("file", "/srv/www", "")
    assert parse_store_url("relative/dir") == ("file", "relative/dir", "")
    assert parse_store_url("https://cdn/log")[0] == "https"
    for bad in ("s3://x/p", "ftp://host/x", "file://otherhost/x", ""):
        with pytest.raises(ConfigError):
            parse_store_url(bad)
    text = "# comment\nexport AWS_ACCESS_KEY_ID=abc\nAWS_SECRET_ACCESS_KEY='s3cr3t'\n"
    assert credentials_from({}, text) == ("abc", "s3cr3t")
    env = {"AWS_ACCESS_KEY_ID": "env", "AWS_SECRET_ACCESS_KEY": "envs"}
    assert credentials_from(env, None) == ("env", "envs")
    with pytest.raises(ConfigError, match="line 1"):
        credentials_from({}, "garbage")


def _conditional_semantics(store: ObjectStore) -> None:
    kw = {"content_type": "text/plain", "cache_control": "no-store"}
    etag = store.put("a/b", b"one", if_none_match=True, **kw)
    with pytest.raises(PreconditionFailedError):
        store.put("a/b", b"two", if_none_match=True, **kw)
    with pytest.raises(PreconditionFailedError):
        store.put("a/b", b"two", if_match="0" * 32, **kw)
    etag2 = store.put("a/b", b"two", if_match=etag, **kw)
    got = store.get("a/b")
    assert got is not None and got.body == b"two" and got.etag == etag2
    with pytest.raises(PreconditionFailedError):  # the old version's tag no longer matches
        store.put("a/b", b"three", if_match=etag, **kw)
    store.put("a/c", b"x", **kw)
    assert list(store.list("a/")) == ["a/b", "a/c"]
    store.delete("a/c")
    assert store.get("a/c") is None
    assert store.get("missing/key") is None

    # Racing create-only writes: exactly one wins.
    def create(n: int) -> bool:
        try:
            store.put("race", str(n).encode(), if_none_match=True, **kw)
            return True
        except PreconditionFailedError:
            return False

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(create, range(16))) == 1


def test_directory_store_conditional_writes(tmp_path: Path) -> None:
    _conditional_semantics(DirectoryStore(tmp_path / "d"))


def test_rgw_conditional_writes(rgw: Gateway) -> None:
    _conditional_semantics(S3Store(rgw.bucket(), "p", rgw.settings()))


class Clock:
    def __init__(self) -> None:
        self.wall = 1_000_000
        self.mono = 100.0

    def advance(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms / 1000


def _lease(store: ObjectStore, clock: Clock, holder: str) -> Lease:
    return Lease(
        store,
        "example.com/log",
        holder=holder,
        ttl_ms=10_000,
        renew_ms=3_000,
        wall_ms=lambda: clock.wall,
        monotonic=lambda: clock.mono,
    )


def _lease_story(store: ObjectStore) -> None:
    clock = Clock()
    a, b = _lease(store, clock, "host-a:1"), _lease(store, clock, "host-b:2")
    a.try_acquire()
    a.check()
    with pytest.raises(LeaseHeldError, match=r"held by host-a:1 until .* \(in 10\.0 s\)") as held:
        b.try_acquire()
    assert held.value.record is not None and held.value.record.holder == "host-a:1"
    with pytest.raises(LeaseLostError):
        b.check()
    clock.advance(5_000)
    a.renew()  # the lease now expires at 15 s; a itself writes only until 5 + 8 s
    clock.advance(7_000)
    with pytest.raises(LeaseHeldError):
        b.try_acquire()
    a.check()
    # a stops renewing (crashed or partitioned): its own deadline passes first...
    clock.advance(1_500)
    with pytest.raises(LeaseLostError, match="not renewed in time"):
        a.check()
    with pytest.raises(LeaseHeldError):
        b.try_acquire()
    # ...then the lease expires and b takes over.
    clock.advance(1_501)
    b.try_acquire()
    b.check()
    current = b.current()
    assert current is not None and current.holder == "host-b:2"
    with pytest.raises(LeaseLostError, match="taken over: now held by host-b:2"):
        a.renew()
    with pytest.raises(LeaseLostError):
        a.check()
    b.release()  # a clean shutdown: the next instance need not wait
    c = _lease(store, clock, "host-c:3")
    c.try_acquire()


def test_lease_on_a_directory(tmp_path: Path) -> None:
    _lease_story(DirectoryStore(tmp_path))


def test_lease_on_rgw(rgw: Gateway) -> None:
    _lease_story(S3Store(rgw.bucket(), "private", rgw.settings()))


def test_lease_race_on_rgw_has_one_winner(rgw: Gateway) -> None:
    store = S3Store(rgw.bucket(), "private", rgw.settings())
    clock = Clock()
    leases = [_lease(store, clock, f"h{n}") for n in range(6)]

    def take(lease: Lease) -> bool:
        try:
            lease.try_acquire()
            return True
        except LeaseHeldError:
            return False

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        won = list(pool.map(take, leases))
    assert sum(won) == 1
    winner = leases[won.index(True)]
    stored = winner.current()
    assert stored is not None and stored.token == winner.token


def test_lease_record_is_strict() -> None:
    rec = LeaseRecord("o", "h", "t", 1, 2, 3)
    assert LeaseRecord.decode(rec.encode()) == rec
    with pytest.raises(MalformedError):
        LeaseRecord.decode(b'{"origin": "o"}')
    assert TILE_WIDTH == 256
