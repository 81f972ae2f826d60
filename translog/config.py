"""Configuration: frozen dataclasses loaded from TOML (stdlib ``tomllib``).

Every key is documented on its field and in ``config/example.toml``. Unknown keys and wrong
types are rejected with a ``ConfigError`` that names the key (``"sequencer.max_pending: …"``).
Paths in the file are relative to the data directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from translog.errors import ConfigError

CONFIG_NAME = "translog.toml"


@dataclass(frozen=True)
class LogSection:
    """[log]: identity of the log."""

    origin: str = ""
    """Checkpoint origin line and note key name, a schema-less URL prefix (required)."""


@dataclass(frozen=True)
class KeysSection:
    """[keys]: key files, relative to the data directory. Private files must be mode 0600."""

    note_key: str = "keys/log.key"
    """Ed25519 note signer key (PRIVATE+KEY+… text)."""
    ct_key: str = "keys/ct.key"
    """ECDSA P-256 private key (PKCS#8 PEM) for RFC 6962 tree head signatures."""


@dataclass(frozen=True)
class StorageSection:
    """[storage]: the LMDB environment under <data>/lmdb."""

    map_size_mb: int = 1024
    """Initial LMDB map size in MiB; it doubles whenever it fills."""
    max_map_size_mb: int = 0
    """Upper bound for the map in MiB; 0 = no bound. Past it, appends fail with 'storage full'."""
    index_leaf_hashes: bool = True
    """Keep a leaf-hash index (needed by get-proof-by-hash and `prove --hash`)."""
    verify_entries_on_start: int = 100_000
    """At startup, check the newest N entries against the tree's stored leaf hashes and refuse
    to serve corrupted data (0 = none; the tree root is always checked against the latest
    signed checkpoint). Reads check every entry they serve either way."""


@dataclass(frozen=True)
class SequencerSection:
    """[sequencer]: the pending pool and group commit."""

    max_batch_entries: int = 4096
    """Upper bound on entries integrated in one LMDB write transaction."""
    max_batch_age_ms: int = 50
    """Upper bound on how long an entry may wait for its batch to be cut. The sequencer never
    waits to fill a batch: whenever the writer is free it cuts whatever is pending."""
    max_pending: int = 100_000
    """Entries accepted but not yet durable; beyond it submissions get a pushback (503)."""


@dataclass(frozen=True)
class PublisherSection:
    """[publisher]: periodic signed checkpoints."""

    interval_ms: int = 1000
    """Sign and publish a checkpoint this often, even when the tree did not grow."""
    max_merge_delay_ms: int = 10_000
    """Promise (?wait=0) deadline: an accepted entry is in the tree within this delay."""


MAX_WORKERS = 64
"""Most HTTP worker processes ``server.workers`` allows."""
EVENT_LOOPS = ("uvloop", "asyncio")
"""The values of ``server.event_loop``."""


@dataclass(frozen=True)
class ServerSection:
    """[server]: HTTP front end."""

    listen: str = "127.0.0.1:8080"
    """host:port to bind; port 0 picks a free port."""
    prefix: str = ""
    """URL path prefix for every route, e.g. "/log1" (empty: routes at the root)."""
    public_tree: bool = True
    """Serve checkpoints, tiles, proofs and leaves without a token."""
    public_payloads: bool = False
    """Serve committed payloads and salts without a read token."""
    default_kind: str = "committed"
    """How payloads are stored when the request does not say: "committed" or "inline"."""
    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body accepted."""
    max_payload_bytes: int = 1024 * 1024
    """Largest single payload accepted (committed payloads may exceed the 65,535-byte leaf)."""
    max_batch_entries: int = 10_000
    """Most entries in one batch request."""
    tokens_file: str = "tokens.json"
    """Token store (hashes only), relative to the data directory."""
    idle_timeout_ms: int = 15_000
    """Close a connection that has no request in progress for this long: idle keep-alive
    connections, and connections that have not sent a complete request head (slowloris)."""
    body_timeout_ms: int = 120_000
    """A request body must arrive completely within this time, or the answer is 408."""
    tls_cert: str = ""
    """PEM certificate chain for HTTPS, relative to the data directory (empty: plain HTTP).
    Needs tls_key too."""
    tls_key: str = ""
    """PEM private key for tls_cert; the file must be mode 0600."""
    event_loop: str = "uvloop"
    """The event loop of ``translog serve`` (log process and workers): "uvloop" (libuv,
    used when installed, else asyncio's with a warning) or "asyncio"."""
    workers: int = 2
    """HTTP worker processes. 0: one process serves HTTP and runs the log. N >= 1: N worker
    processes share the port (SO_REUSEPORT) and answer every request; one log process
    sequences, signs and stores (docs/ARCHITECTURE.md, "Process model"). The default, 2,
    measured best on a 2-core machine."""


@dataclass(frozen=True)
class WitnessesSection:
    """[witnesses]: witnesses that cosign each published checkpoint (c2sp.org/tlog-witness)."""

    policy: str = ""
    """Witness policy file (translog/policy.py grammar), relative to the data directory; each
    `witness` line needs its URL. Empty: no witnesses."""
    require_quorum: bool = True
    """Publish no checkpoint whose cosignatures fall short of the policy's quorum."""
    timeout_ms: int = 5000
    """Bound on each add-checkpoint request."""


@dataclass(frozen=True)
class EventsSection:
    """[events]: accept, validate, index and retain ``translog.event/v1`` audit events."""

    enabled: bool = False
    """Validate every submission as an audit event (400 naming the field otherwise), index
    events for search, and serve /events/search and the /explorer page."""
    index: bool = True
    """Maintain the search indexes in the sequencing transaction (when enabled)."""
    retention: str = "forever"
    """Default retention: "soc2" (1 y), "pci_dss" (1 y), "hipaa" (6 y), "forever", or "<N>d"."""
    retention_by_category: dict[str, str] = field(default_factory=dict)
    """Retention per event category, overriding ``retention`` (same values)."""
    retention_interval_s: int = 3600
    """How often the server erases payloads past their retention (0 = only on request)."""
    self_audit: bool = True
    """Record payload reads, searches and admin actions in the log as events."""
    self_tenant: str = "translog"
    """The tenant of the log's own self-audit events."""


@dataclass(frozen=True)
class ObjectStoreSection:
    """[objstore]: publish the log to an S3-compatible object store or a directory.

    See docs/OBJSTORE.md. Off while ``url`` is empty.
    """

    url: str = ""
    """Public store: "s3://bucket/prefix", "file:///srv/www/log" or a directory path. It gets the
    checkpoint, tiles and entry bundles (the whole tlog-tiles read path) and nothing else."""
    private_url: str = ""
    """Private store: committed payloads, the checkpoint history and the lease. Must not be
    readable by the public; empty: payloads are not published and no lease is taken."""
    endpoint: str = ""
    """S3 endpoint URL (e.g. "http://127.0.0.1:17480"); empty: AWS for the region."""
    region: str = "us-east-1"
    """S3 region used for request signing."""
    credentials_file: str = ""
    """File (mode 0600, relative to the data directory) with AWS_ACCESS_KEY_ID=… and
    AWS_SECRET_ACCESS_KEY=… lines; empty: those environment variables."""
    setup_bucket: bool = False
    """Create missing buckets, and let anyone GET objects under the public prefix (bucket
    policy naming only that prefix)."""
    concurrency: int = 8
    """Uploads in flight at once."""
    max_lag_ms: int = 60_000
    """/healthz turns unhealthy when the store is this far behind the durable tree."""
    lease: bool = True
    """Hold the single-writer lease (needs private_url): a second instance waits."""
    lease_ttl_ms: int = 30_000
    """Lease lifetime; a crashed holder is replaced this long after its last renewal."""
    lease_renew_ms: int = 10_000
    """Renew the lease this often (must be below lease_ttl_ms / 2)."""
    holder: str = ""
    """How this instance names itself in the lease; empty: "host:pid"."""


MAX_SYSLOG_MESSAGE_BYTES = 16 * 1024
"""Largest ``syslog.max_message_bytes``: with its original bytes, an event stays under 64 KiB."""


@dataclass(frozen=True)
class SyslogSection:
    """[syslog]: the syslog-over-TLS listener (RFC 5425; docs/EVENTS.md). Off while ``listen``
    is empty. It runs in the process that owns the log."""

    listen: str = ""
    """host:port to bind (6514 is the RFC 5425 port; 0 picks a free port). Empty: off."""
    relp_listen: str = ""
    """host:port for RELP over TLS (rsyslog's omrelp), which acknowledges each message once
    it is durable; the same certificate, client CA, tenant and limits. Empty: off."""
    tls_cert: str = ""
    """PEM certificate chain of the listener, relative to the data directory (required)."""
    tls_key: str = ""
    """PEM private key for tls_cert; the file must be mode 0600 (required)."""
    client_ca: str = ""
    """PEM CA certificates: clients must present a certificate they issued, and its subject
    is recorded in every event. Empty: no client certificate is asked for (anonymous)."""
    tenant: str = "default"
    """The tenant of the events made from syslog messages."""
    max_message_bytes: int = 8192
    """Largest frame (MSG-LEN) accepted; a larger one closes the connection. RFC 5425 asks
    for at least 2048 and recommends 8192."""
    max_connections: int = 64
    """Connections served at once; more are closed as they arrive."""
    max_inflight_per_connection: int = 2048
    """Messages of one connection read but not yet durable; at the bound it stops reading."""
    max_inflight: int = 16_384
    """Messages of all connections read but not yet durable; at the bound all stop reading."""
    rate_per_s: int = 0
    """Entries per second allowed per client identity (``syslog:<subject>``); 0 = unlimited."""
    idle_timeout_ms: int = 300_000
    """Close a connection that sends nothing for this long (0 = never)."""


@dataclass(frozen=True)
class Config:
    """The whole configuration of one log."""

    log: LogSection = field(default_factory=LogSection)
    keys: KeysSection = field(default_factory=KeysSection)
    storage: StorageSection = field(default_factory=StorageSection)
    sequencer: SequencerSection = field(default_factory=SequencerSection)
    publisher: PublisherSection = field(default_factory=PublisherSection)
    server: ServerSection = field(default_factory=ServerSection)
    witnesses: WitnessesSection = field(default_factory=WitnessesSection)
    events: EventsSection = field(default_factory=EventsSection)
    objstore: ObjectStoreSection = field(default_factory=ObjectStoreSection)
    syslog: SyslogSection = field(default_factory=SyslogSection)

    def validate(self) -> None:
        """Check cross-field rules; raise ConfigError naming the key."""
        if not self.log.origin or any(c.isspace() or c == "+" for c in self.log.origin):
            raise ConfigError("log.origin: must be non-empty, without spaces or '+'")
        positive = {
            "sequencer.max_batch_entries": self.sequencer.max_batch_entries,
            "sequencer.max_pending": self.sequencer.max_pending,
            "publisher.interval_ms": self.publisher.interval_ms,
            "publisher.max_merge_delay_ms": self.publisher.max_merge_delay_ms,
            "storage.map_size_mb": self.storage.map_size_mb,
            "server.max_body_bytes": self.server.max_body_bytes,
            "server.max_payload_bytes": self.server.max_payload_bytes,
            "server.max_batch_entries": self.server.max_batch_entries,
            "witnesses.timeout_ms": self.witnesses.timeout_ms,
            "server.idle_timeout_ms": self.server.idle_timeout_ms,
            "server.body_timeout_ms": self.server.body_timeout_ms,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key}: must be positive, got {value}")
        if self.sequencer.max_batch_age_ms < 0 or self.sequencer.max_batch_age_ms > 100:
            raise ConfigError("sequencer.max_batch_age_ms: must be between 0 and 100")
        if self.storage.verify_entries_on_start < 0:
            raise ConfigError("storage.verify_entries_on_start: must be 0 or positive")
        if bool(self.server.tls_cert) != bool(self.server.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key: set both or neither")
        if self.storage.max_map_size_mb < 0:
            raise ConfigError("storage.max_map_size_mb: must be 0 (no limit) or positive")
        if not 0 <= self.server.workers <= MAX_WORKERS:
            raise ConfigError(f"server.workers: must be between 0 and {MAX_WORKERS}")
        _validate_objstore(self.objstore)
        if self.server.event_loop not in EVENT_LOOPS:
            raise ConfigError('server.event_loop: must be "uvloop" or "asyncio"')
        if self.server.default_kind not in ("committed", "inline"):
            raise ConfigError('server.default_kind: must be "committed" or "inline"')
        if self.server.prefix and (
            not self.server.prefix.startswith("/") or self.server.prefix.endswith("/")
        ):
            raise ConfigError('server.prefix: must start with "/" and not end with "/"')
        self._validate_events()
        _validate_syslog(self.syslog)

    def _validate_events(self) -> None:
        from translog.formats.event_presets import parse_retention

        ev = self.events
        parse_retention(ev.retention, "events.retention")
        for category, value in ev.retention_by_category.items():
            parse_retention(value, f"events.retention_by_category.{category}")
        if ev.retention_interval_s < 0:
            raise ConfigError("events.retention_interval_s: must be 0 (off) or positive")
        if not ev.self_tenant or len(ev.self_tenant) > 64:
            raise ConfigError("events.self_tenant: must be 1-64 characters")


def _validate_syslog(s: SyslogSection) -> None:
    import re

    if not s.listen and not s.relp_listen:
        return
    for key in ("listen", "relp_listen"):
        value = getattr(s, key)
        host, sep, port = value.rpartition(":")
        if value and (not sep or not host or not port.isdigit() or int(port) > 65535):
            raise ConfigError(f"syslog.{key}: expected HOST:PORT, got {value!r}")
    if not s.tls_cert or not s.tls_key:
        raise ConfigError(
            "syslog.tls_cert and syslog.tls_key: required when syslog.listen or "
            "syslog.relp_listen is set"
        )
    if s.listen and s.listen == s.relp_listen and not s.listen.endswith(":0"):
        raise ConfigError("syslog.relp_listen: must differ from syslog.listen")
    if not 1 <= s.max_message_bytes <= MAX_SYSLOG_MESSAGE_BYTES:
        raise ConfigError(
            f"syslog.max_message_bytes: must be between 1 and {MAX_SYSLOG_MESSAGE_BYTES}"
        )
    for key in ("max_connections", "max_inflight_per_connection", "max_inflight"):
        if getattr(s, key) <= 0:
            raise ConfigError(f"syslog.{key}: must be positive, got {getattr(s, key)}")
    if s.max_inflight_per_connection > s.max_inflight:
        raise ConfigError("syslog.max_inflight_per_connection: must be at most max_inflight")
    if s.rate_per_s < 0:
        raise ConfigError("syslog.rate_per_s: must be 0 (unlimited) or positive")
    if s.idle_timeout_ms < 0:
        raise ConfigError("syslog.idle_timeout_ms: must be 0 (never) or positive")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", s.tenant):
        raise ConfigError("syslog.tenant: must be 1-64 of A-Z a-z 0-9 . _ - (not first: . _ -)")


def _validate_objstore(o: ObjectStoreSection) -> None:
    for key, value in (("concurrency", o.concurrency), ("max_lag_ms", o.max_lag_ms)):
        if value <= 0:
            raise ConfigError(f"objstore.{key}: must be positive, got {value}")
    if not 0 < o.lease_renew_ms * 2 <= o.lease_ttl_ms:
        raise ConfigError("objstore.lease_renew_ms: must be positive and at most lease_ttl_ms / 2")
    if o.private_url and o.private_url.rstrip("/") == o.url.rstrip("/"):
        raise ConfigError("objstore.private_url: must differ from objstore.url")
    if o.private_url and o.url and o.private_url.startswith(o.url.rstrip("/") + "/"):
        raise ConfigError("objstore.private_url: must not be inside objstore.url (it is public)")
    if o.private_url and not o.url:
        raise ConfigError("objstore.private_url: needs objstore.url")


T = TypeVar("T")


def _check_type(key: str, value: Any, typ: Any) -> Any:
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if typ == dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{key}: expected a table of strings")
        return dict(value)
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - schema bug


def _build(cls: type[T], data: Any, prefix: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in known:
            raise ConfigError(f"{key}: unknown key")
        typ = hints[name]
        if dataclasses.is_dataclass(typ) and not isinstance(typ, types.GenericAlias):
            kwargs[name] = _build(typ, value, key + ".")  # type: ignore[arg-type]
        else:
            kwargs[name] = _check_type(key, value, typ)
    return cls(**kwargs)


def parse_config(text: str, *, source: str = "config") -> Config:
    """Parse and validate TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from e
    config = _build(Config, data, "")
    config.validate()
    return config


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"couldn't read config {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8") from e
    return parse_config(text, source=str(path))


def format_config(config: Config) -> str:
    """Render a config as TOML (string, int and bool values; tables of strings last)."""
    lines: list[str] = []
    for section in dataclasses.fields(config):
        lines.append(f"[{section.name}]")
        sub = getattr(config, section.name)
        tables: list[str] = []
        for f in dataclasses.fields(sub):
            value = getattr(sub, f.name)
            if isinstance(value, dict):
                tables.append(f"[{section.name}.{f.name}]")
                tables += [f"{_toml_string(k)} = {_toml_string(v)}" for k, v in value.items()]
                continue
            if isinstance(value, bool):
                rendered = "true" if value else "false"
            elif isinstance(value, int):
                rendered = str(value)
            else:
                rendered = _toml_string(str(value))
            lines.append(f"{f.name} = {rendered}")
        lines.append("")
        if tables:
            lines += [*tables, ""]
    return "\n".join(lines)


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
