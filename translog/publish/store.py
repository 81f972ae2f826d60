"""Object stores: where a log publishes its tiles, checkpoint, payloads and lease.

An :class:`ObjectStore` is a flat key space under a root (an S3 bucket and prefix, or a
directory). Every method blocks; the publisher calls them from worker threads.

* :class:`S3Store` talks to any S3-compatible store through botocore (path-style addressing,
  bounded retries and timeouts). Conditional writes use ``If-None-Match: *`` (create only) and
  ``If-Match: <etag>`` (replace only that version). Ceph 16's RADOS Gateway compares
  ``If-Match`` with the ETag *without* its quotes, so the ETag is sent bare (AWS S3 accepts
  that form too), and it sometimes answers a lost conditional race with ``500`` instead of
  ``412``: after a ``500`` on a conditional write the object is read back, and the write
  counts as done only if the store now holds exactly our bytes (the ETag of a single-part PUT
  is the MD5 of its body).
* :class:`DirectoryStore` writes files atomically (temporary file, fsync, rename). Create-only
  writes use ``link(2)``, which fails when the name exists; replace-only writes take an
  ``flock`` on ``.translog-lock`` in the root around read, compare and rename. Cache headers
  cannot be stored with a file: the web server in front sets them (see docs/OBJSTORE.md).

Errors (defined in translog.errors): :class:`~translog.errors.PreconditionFailedError` when a
condition does not hold (another writer got there first);
:class:`~translog.errors.ObjectStoreError` for everything else (network, permissions, a missing
bucket). Secrets never appear in messages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from translog.errors import ConfigError, ObjectStoreError, PreconditionFailedError

if TYPE_CHECKING:
    from botocore.client import BaseClient


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object's body and its entity tag (without quotes)."""

    body: bytes
    etag: str


class ObjectStore(Protocol):
    """A flat key space; keys are relative to the store's root and use ``/``."""

    url: str
    """Where the store is, for messages (never holds credentials)."""

    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        cache_control: str,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """Write ``body`` at ``key``; return the new ETag.

        ``if_none_match``: only if no object exists there. ``if_match``: only if the current
        object has this ETag. Raises :class:`PreconditionFailedError` when the condition fails.
        """
        ...

    def get(self, key: str) -> StoredObject | None:
        """The object at ``key``, or None when there is none."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Keys that start with ``prefix``, in lexicographic order."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object at ``key`` (no error when it is absent)."""
        ...


def md5_etag(body: bytes) -> str:
    """The ETag S3 gives a single-part PUT of ``body``."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


# ----------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible store (credentials are never printed)."""

    endpoint: str = ""
    """Endpoint URL, e.g. ``http://127.0.0.1:17480``; empty: the AWS default for the region."""
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    concurrency: int = 8
    timeout_s: float = 10.0

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"S3Settings(endpoint={self.endpoint!r}, region={self.region!r})"


class S3Store:
    """An S3 bucket and key prefix, through botocore (path-style addressing)."""

    def __init__(self, bucket: str, prefix: str, settings: S3Settings) -> None:
        """Create the client; nothing is sent until a method is called."""
        try:
            import botocore.config
            import botocore.session
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise ConfigError(
                "publishing to S3 needs botocore: pip install 'translog[objstore]'"
            ) from e
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        shown = settings.endpoint or "aws"
        self.url = f"s3://{bucket}/{self.prefix}" + (f" at {shown}" if shown else "")
        session = botocore.session.get_session()
        config = botocore.config.Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=settings.timeout_s,
            read_timeout=settings.timeout_s,
            max_pool_connections=max(10, settings.concurrency * 2),
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: BaseClient = session.create_client(
            "s3",
            endpoint_url=settings.endpoint or None,
            region_name=settings.region,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            config=config,
        )

    def key(self, key: str) -> str:
        """The full object key for ``key``."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        cache_control: str,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """See :meth:`ObjectStore.put`."""
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key(key),
            "Body": body,
            "ContentType": content_type,
            "CacheControl": cache_control,
        }
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = if_match.strip('"')
        try:
            answer = self._client.put_object(**args)
        except Exception as e:
            status, code = _status(e)
            if status == 412 or code == "PreconditionFailed":
                raise PreconditionFailedError(f"{self.key(key)}: precondition failed") from e
            conditional = if_none_match or if_match is not None
            if conditional and status is not None and status >= 500:
                # Ceph sometimes reports a lost race as a 500: look at what is there now.
                current = self.get(key)
                if current is not None and current.etag == md5_etag(body):
                    return current.etag
                raise PreconditionFailedError(
                    f"{self.key(key)}: conditional write answered {status}, and the store "
                    "holds another version"
                ) from e
            raise self._error("put", key, e) from e
        return str(answer["ETag"]).strip('"')

    def get(self, key: str) -> StoredObject | None:
        """See :meth:`ObjectStore.get`."""
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self.key(key))
            body = answer["Body"].read()
        except Exception as e:
            status, code = _status(e)
            if status == 404 and code != "NoSuchBucket":
                return None
            raise self._error("get", key, e) from e
        return StoredObject(body, str(answer["ETag"]).strip('"'))

    def list(self, prefix: str) -> Iterator[str]:
        """See :meth:`ObjectStore.list`."""
        full = self.key(prefix)
        skip = len(self.prefix) + 1 if self.prefix else 0
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "MaxKeys": 1000}
            if token:
                args["ContinuationToken"] = token
            try:
                answer = self._client.list_objects_v2(**args)
            except Exception as e:
                raise self._error("list", prefix, e) from e
            for item in answer.get("Contents", ()):
                yield str(item["Key"])[skip:]
            if not answer.get("IsTruncated"):
                return
            token = answer.get("NextContinuationToken")

    def delete(self, key: str) -> None:
        """See :meth:`ObjectStore.delete`."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.key(key))
        except Exception as e:
            raise self._error("delete", key, e) from e

    def ensure_bucket(self, *, public_read: bool) -> None:
        """Create the bucket if missing; with ``public_read``, let anyone GET under the prefix.

        The policy names only this store's prefix, so a private prefix in the same bucket stays
        private.
        """
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as e:
            status, _ = _status(e)
            if status != 404:
                raise self._error("head bucket", "", e) from e
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except Exception as e2:
                status, code = _status(e2)
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise self._error("create bucket", "", e2) from e2
        if public_read:
            import json

            resource = f"arn:aws:s3:::{self.bucket}/" + (f"{self.prefix}/*" if self.prefix else "*")
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "translog-public-read",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": ["s3:GetObject"],
                        "Resource": [resource],
                    }
                ],
            }
            try:
                self._client.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(policy))
            except Exception as e:
                raise self._error("put bucket policy", "", e) from e

    def _error(self, what: str, key: str, e: Exception) -> ObjectStoreError:
        status, code = _status(e)
        detail = f"HTTP {status} {code}" if status is not None else type(e).__name__
        return ObjectStoreError(f"{self.url}: {what} {self.key(key)!r} failed: {detail}")


def _status(e: Exception) -> tuple[int | None, str]:
    """HTTP status and S3 error code of a botocore error (None for network errors)."""
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return None, ""
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(response.get("Error", {}).get("Code", ""))
    return (int(status) if status is not None else None), code


# ----------------------------------------------------------------------------- directory

_LOCK_NAME = ".translog-lock"


class DirectoryStore:
    """A directory: one file per object, written atomically and fsynced."""

    def __init__(self, root: str | Path) -> None:
        """Use (and create, mode 0755) the directory ``root``."""
        self.root = Path(root)
        self.url = f"file://{self.root.resolve()}"

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise ObjectStoreError(f"invalid object key {key!r}")
        return self.root / key

    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        cache_control: str,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """See :meth:`ObjectStore.put` (content type and cache control are not stored)."""
        del content_type, cache_control
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            try:
                if if_none_match:
                    try:
                        os.link(tmp, path)
                    except FileExistsError as e:
                        raise PreconditionFailedError(f"{key}: exists") from e
                elif if_match is not None:
                    with self._locked():
                        current = self.get(key)
                        if current is None or current.etag != if_match.strip('"'):
                            raise PreconditionFailedError(f"{key}: changed")
                        os.replace(tmp, path)
                else:
                    os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            _fsync_dir(path.parent)
        except OSError as e:
            raise ObjectStoreError(f"{self.url}: put {key!r} failed: {e.strerror}") from e
        return md5_etag(body)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def get(self, key: str) -> StoredObject | None:
        """See :meth:`ObjectStore.get`."""
        try:
            body = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ENOTDIR:
                return None
            raise ObjectStoreError(f"{self.url}: get {key!r} failed: {e.strerror}") from e
        return StoredObject(body, md5_etag(body))

    def list(self, prefix: str) -> Iterator[str]:
        """See :meth:`ObjectStore.list`."""
        if not self.root.is_dir():
            return
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            for name in files:
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        """See :meth:`ObjectStore.delete`."""
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- HTTP (read-only)


class HttpStore:
    """A published log read over plain HTTP(S) GETs: a CDN, nginx, a bucket URL, a mirror.

    Read-only; used by mirrors and by ``translog rebuild --from https://…``.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        """Read objects under ``base_url`` (no request yet)."""
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{base_url!r}: expected an http:// or https:// URL")
        self.url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def put(self, key: str, body: bytes, **_: object) -> str:
        """Always fails: this store is read-only."""
        raise ObjectStoreError(f"{self.url} is read-only")

    def get(self, key: str) -> StoredObject | None:
        """GET ``base_url/key``; None on 404 (and 403, which S3 sends for missing objects)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/{key}", timeout=self.timeout_s) as resp:
                body = resp.read()
                etag = str(resp.headers.get("ETag") or md5_etag(body)).strip('"')
        except urllib.error.HTTPError as e:
            if e.code in (403, 404):
                return None
            raise ObjectStoreError(f"{self.url}/{key}: HTTP {e.code}") from e
        except (OSError, ValueError) as e:
            raise ObjectStoreError(f"{self.url}/{key}: {e}") from e
        return StoredObject(body, etag)

    def list(self, prefix: str) -> Iterator[str]:
        """Listing is not part of the read path: nothing is listed."""
        return iter(())

    def delete(self, key: str) -> None:
        """Always fails: this store is read-only."""
        raise ObjectStoreError(f"{self.url} is read-only")


# ----------------------------------------------------------------------------- opening


def parse_store_url(url: str) -> tuple[str, str, str]:
    """Split ``s3://bucket/prefix``, ``file:///dir`` (or a plain path) or an HTTP URL.

    For S3: ("s3", bucket, prefix). For a directory: ("file", path, ""). For HTTP(S), a
    read-only store: ("http" or "https", url, "").
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        if not 3 <= len(bucket) <= 63 or not all(c.isalnum() or c in "-." for c in bucket):
            raise ConfigError(f"{url!r}: invalid bucket name {bucket!r}")
        return "s3", bucket, parsed.path.strip("/")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"{url!r}: a file URL must name a local path (file:///dir)")
        return "file", urllib.parse.unquote(parsed.path), ""
    if parsed.scheme in ("http", "https"):
        return parsed.scheme, url, ""
    if parsed.scheme == "" and url:
        return "file", url, ""
    raise ConfigError(
        f"{url!r}: expected s3://bucket/prefix, file:///dir, a directory path or an http(s) URL"
    )


def open_store(url: str, settings: S3Settings | None = None) -> ObjectStore:
    """The store named by ``url`` (see :func:`parse_store_url`)."""
    scheme, a, b = parse_store_url(url)
    if scheme == "s3":
        return S3Store(a, b, settings or S3Settings())
    if scheme in ("http", "https"):
        return HttpStore(a)
    return DirectoryStore(a)


def credentials_from(
    env: dict[str, str] | os._Environ[str], file_text: str | None
) -> tuple[str | None, str | None]:
    """Access key and secret from a credentials file (``NAME=value`` lines) or the environment.

    The file wins. Names: ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``.
    """
    values: dict[str, str] = {}
    if file_text is not None:
        for n, line in enumerate(file_text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"credentials file line {n}: expected NAME=value")
            values[name.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    access = values.get("AWS_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY_ID")
    secret = values.get("AWS_SECRET_ACCESS_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
    return access, secret
