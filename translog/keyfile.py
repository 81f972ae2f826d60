"""Private key files: created 0600 and fsynced, never overwritten; read only when 0600.

Keys (note and tree-head keys) and secrets such as the dev token are kept in files only the
owner can read. :func:`write_private_file` creates one exclusively and makes it durable;
:func:`read_private_file` refuses one that group or others can access, checking the open file
(no check-then-open race).
"""

from __future__ import annotations

import os
import stat

from translog.errors import ConfigError


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Create ``path`` with mode 0600, write ``data`` and fsync; never overwrite.

    Raises :class:`ConfigError` if the file exists. On a write failure the partial file is
    removed.
    """
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as e:
        raise ConfigError(f"refusing to overwrite existing key file {os.fspath(path)}") from e
    except OSError as e:
        raise ConfigError(f"cannot create key file {os.fspath(path)}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o600)  # the umask cannot widen it, but make it exact
        _write_all(fd, data)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise ConfigError(f"cannot write key file {os.fspath(path)}: {e.strerror}") from e
    os.close(fd)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def read_private_file(path: str | os.PathLike[str]) -> bytes:
    """Read a private key file, refusing one that group or others can access."""
    shown = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # a fifo must not hang
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise ConfigError(f"private key {shown} does not exist") from e
    except OSError as e:
        raise ConfigError(f"cannot open private key {shown}: {e.strerror}") from e
    try:
        _check_key_mode(shown, os.fstat(fd))  # fstat the open file: no check-then-open race
    except ConfigError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _check_key_mode(shown: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"private key {shown} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        what = "readable" if mode & 0o044 else "accessible"
        raise ConfigError(
            f"private key {shown} is {what} by group or others (mode {mode:04o}); "
            f"run chmod 600 {shown}"
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the file itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
