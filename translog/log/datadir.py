"""A data directory holds exactly one log: its config, its keys and its LMDB environment.

Layout::

    DATA/
      translog.toml     the log's config (origin, limits, ...)
      keys/log.key      Ed25519 note signer key, PRIVATE+KEY+... text     (0600)
      keys/log.vkey     the matching verifier key (public)
      keys/ct.key       ECDSA P-256 private key, PKCS#8 PEM                (0600)
      keys/ct.pub.pem   the matching public key (public)
      lmdb/             the LMDB environment (data.mdb, lock.mdb; merger.lock: see storage/lmdb.py)

``init_data_dir`` refuses to touch a directory that already holds a log. ``open_data_dir``
refuses private key files that group or others can read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from translog.config import CONFIG_NAME, Config, LogSection, format_config, load_config
from translog.core.ct import TreeHeadSigner
from translog.core.signing import NoteSigner
from translog.errors import ConfigError
from translog.keyfile import read_private_file, write_private_file

if TYPE_CHECKING:
    from translog.storage.lmdb import LMDBStorage

LMDB_DIR = "lmdb"


@dataclass(frozen=True)
class DataDir:
    """An opened data directory: its path, config and signing keys."""

    path: Path
    config: Config
    signer: NoteSigner
    tree_head_signer: TreeHeadSigner

    @property
    def lmdb_path(self) -> Path:
        """Where the LMDB environment lives."""
        return self.path / LMDB_DIR

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the data directory."""
        return self.path / relative

    def open_storage(self, *, readonly: bool = False) -> LMDBStorage:
        """Open the log's LMDB storage with the configured map sizes."""
        from translog.storage.lmdb import LMDBStorage

        s = self.config.storage
        return LMDBStorage(
            self.lmdb_path,
            map_size=s.map_size_mb << 20,
            max_map_size=s.max_map_size_mb << 20,
            index_leaf_hashes=s.index_leaf_hashes,
            readonly=readonly,
        )


def is_initialised(path: Path) -> bool:
    """True when ``path`` already holds a log (config, keys or LMDB data)."""
    return any((path / name).exists() for name in (CONFIG_NAME, "keys", LMDB_DIR))


def init_data_dir(path: str | Path, origin: str, config: Config | None = None) -> DataDir:
    """Create a new log in ``path``: keys (0600), config and an empty LMDB environment."""
    root = Path(path)
    if is_initialised(root):
        raise ConfigError(f"{root} already holds a log; refusing to touch it")
    base = config or Config()
    config = replace(base, log=LogSection(origin=origin))
    config.validate()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    signer = NoteSigner.generate(origin)
    tree_head_signer = TreeHeadSigner.generate()
    write_private_file(root / config.keys.note_key, signer.skey.encode())
    (root / config.keys.note_key).with_suffix(".vkey").write_text(signer.vkey + "\n")
    write_private_file(root / config.keys.ct_key, tree_head_signer.private_pem())
    (keys / "ct.pub.pem").write_bytes(tree_head_signer.public_pem())
    _write_new(root / CONFIG_NAME, _config_header(origin) + format_config(config))
    data_dir = DataDir(root, config, signer, tree_head_signer)
    data_dir.open_storage().close()
    return data_dir


def _config_header(origin: str) -> str:
    return (
        f"# translog config for the log {origin}\n"
        "# Every key is documented in config/example.toml. Paths are relative to this "
        "directory.\n\n"
    )


def _write_new(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def open_data_dir(path: str | Path, config_path: str | Path | None = None) -> DataDir:
    """Open an existing data directory; ``config_path`` overrides DATA/translog.toml."""
    root = Path(path)
    cfg_file = Path(config_path) if config_path else root / CONFIG_NAME
    if not root.is_dir():
        raise ConfigError(f"data directory {root} does not exist; run `translog init` first")
    if not cfg_file.exists():
        raise ConfigError(f"{cfg_file} not found: {root} does not hold a log")
    config = load_config(cfg_file)
    signer = NoteSigner.from_skey(read_private_file(root / config.keys.note_key).decode().strip())
    if signer.name != config.log.origin:
        raise ConfigError(
            f"note key is for {signer.name!r} but log.origin is {config.log.origin!r}"
        )
    tree_head_signer = TreeHeadSigner.from_pem(read_private_file(root / config.keys.ct_key))
    return DataDir(root, config, signer, tree_head_signer)


def read_vkey(path: str | Path) -> str:
    """The log's verifier key, read from the public vkey file (no private key needed)."""
    root = Path(path)
    cfg_file = root / CONFIG_NAME
    config = load_config(cfg_file) if cfg_file.exists() else Config()
    vkey_file = (root / config.keys.note_key).with_suffix(".vkey")
    try:
        return vkey_file.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"couldn't read {vkey_file}: {e.strerror}") from e
