"""A run store in an S3 bucket (``s3://bucket/prefix``), for any S3-compatible endpoint.

Same key layout as :class:`~expkit.stores.filesystem.FileStore` (see :mod:`expkit.stores.base`),
objects named ``<prefix>/<key>``. Only plain S3 API calls are used (GET/PUT/HEAD object,
ListObjectsV2, DeleteObjects, CreateBucket), so AWS S3, SeaweedFS, MinIO, Ceph RGW, Garage and
hosted services all work. This is the only module that imports :mod:`minio`.

Configuration (see ``docs/s3.md``) comes from the environment — ``EXPKIT_S3_ENDPOINT``,
``EXPKIT_S3_INSECURE``, ``EXPKIT_S3_CA_BUNDLE``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION`` — or from a TOML profile file
(``$EXPKIT_CONFIG``, default ``~/.config/expkit/config.toml``): an ``[s3]`` table, and named
profiles ``[s3.NAME]`` selected by ``EXPKIT_PROFILE``. Environment variables win over the file.

Publishing a cell deletes the earlier attempt's ``run.json`` first, then the earlier attempt's
other stale objects, uploads the new files and writes ``run.json`` last, so a reader never sees a
``run.json`` next to files of another attempt. Reads of many objects run concurrently and go
through a local cache keyed by ETag (one SQLite database per endpoint and bucket, see
:class:`ObjectCache`): a second collection of an unchanged run downloads nothing. Their GETs go
over lean kept-alive connections (:mod:`expkit.stores.s3.wire`, a sixth of the SDK's client CPU per
object) on path-style endpoints; every answer other than 200/304 is asked again through the SDK.
Transient failures (connection refused or reset, timeouts, HTTP 5xx, SlowDown) are retried with
exponential backoff (:class:`RetryPolicy`); when the retries run out the error names what is missing.
Credentials never appear in :attr:`S3Store.url`, ``repr``, log records or error messages.
"""

from __future__ import annotations

import hashlib
import http.client
import inspect
import io
import json
import logging
import os
import queue
import random
import re
import shutil
import sqlite3
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus, urlsplit
from xml.etree import ElementTree

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from expkit.core.contract import RUN_FILE
from expkit.core.errors import ArtifactError, StoreError
from expkit.stores.base import (
    MANIFEST_KEY,
    RUNS_DIR,
    ObjectNotFound,
    RunStore,
    cell_prefix,
    check_key,
)
from expkit.stores.s3 import wire as s3wire

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_REGION = "us-east-1"
DEFAULT_ENDPOINT = "https://s3.amazonaws.com"
#: Concurrent requests. On 2 CPUs shared with a local server, 12 to 48 cost the same CPU per object
#: and 8 or fewer more (bench/collect.py); against a remote endpoint they overlap latency.
DEFAULT_WORKERS = 16
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: Objects larger than this are never kept in the local cache.
CACHE_MAX_OBJECT = 8 * 1024 * 1024
#: Seconds a cache read or write waits for another process holding the cache database's lock;
#: after that the cache is turned off for the store object (a warning), the reads go on.
CACHE_BUSY_TIMEOUT = 10.0
_CACHE_BATCH = 1000  # objects per cache write transaction
_SQL_CHUNK = 500  # keys per "key IN (...)" query (SQLite allowed at most 999 parameters before 3.32)
_PROGRESS_STEP = 64  # read_many reports progress every this many objects
#: A listing made by this store object is trusted for ETags this long (seconds).
LISTING_TTL = 60.0
#: With at least this many cached keys to validate, list their prefix instead of asking per key.
LIST_THRESHOLD = 32
_PAGE = 1000  # S3 returns at most 1000 keys per listing page, and deletes at most 1000 per request
_SPLIT_DEPTH = 4  # listings split by delimiter down to <run>/runs/<algorithm>/<dataset>/
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "ServerBusy",
        "Busy",
        "XMinioServerNotInitialized",
        "OperationAborted",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "InvalidClientTokenId",
        "MissingSecurityHeader",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
_PROFILE_KEYS = ("endpoint", "region", "access_key_id", "secret_access_key", "session_token", "insecure", "ca_bundle")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class S3ConfigError(StoreError):
    """The S3 configuration (URL, endpoint, profile file, credentials variables) is unusable."""

    exit_code = 2


class BucketNotFound(StoreError):
    """The bucket of the store does not exist at the endpoint."""


class S3AuthError(StoreError):
    """The endpoint rejected the credentials, or they lack permission."""


class _GaveUp(StoreError):
    """Retries ran out; ``reason`` is the last failure in a few words ('connection refused', 'HTTP 503')."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class S3UnreachableError(_GaveUp):
    """The endpoint could not be reached (after the retries)."""


class S3TLSError(StoreError):
    """The TLS handshake with the endpoint failed (wrong scheme, untrusted certificate)."""


class S3TransferError(_GaveUp):
    """Some objects could not be read or written after the retries; the message names them."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff: ``attempts`` tries in all, waiting ``base_delay``
    seconds after the first failure, doubling each time, at most ``max_delay``."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise S3ConfigError(f"invalid retry policy {self}: attempts must be >= 1 and delays >= 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (with 10% jitter)."""
        base = min(self.base_delay * (2 ** (failures - 1)), self.max_delay)
        return base * (1 + 0.1 * random.random())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """``EXPKIT_S3_ATTEMPTS`` and ``EXPKIT_S3_BACKOFF`` (first delay in seconds) override the defaults."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        for var, name, conv in (("EXPKIT_S3_ATTEMPTS", "attempts", int), ("EXPKIT_S3_BACKOFF", "base_delay", float)):
            if env.get(var):
                try:
                    kwargs[name] = conv(env[var])
                except ValueError:
                    raise S3ConfigError(f"{var}={env[var]!r} is not a number") from None
        return cls(**kwargs)


@dataclass(frozen=True)
class S3Config:
    """Where and how to connect. Credentials are kept out of ``repr``; ``credentials_source`` and
    ``endpoint_source`` say where they came from, for error messages."""

    endpoint: str = DEFAULT_ENDPOINT  # scheme://host[:port], no path, no credentials
    region: str | None = DEFAULT_REGION
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    credentials_source: str = "no credentials (anonymous requests)"
    endpoint_source: str = "the default"

    @property
    def secure(self) -> bool:
        return self.endpoint.startswith("https://")

    @property
    def netloc(self) -> str:
        return self.endpoint.split("://", 1)[1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """Resolve the configuration: environment variables first, then the profile file, then defaults."""
        env = os.environ if environ is None else environ
        profile, where = _load_profile(env)
        insecure = env.get("EXPKIT_S3_INSECURE", "").strip().lower() in _TRUE or profile.get("insecure") is True
        if env.get("EXPKIT_S3_ENDPOINT"):
            raw, endpoint_source = env["EXPKIT_S3_ENDPOINT"], "EXPKIT_S3_ENDPOINT"
        elif profile.get("endpoint"):
            raw, endpoint_source = str(profile["endpoint"]), where
        else:
            raw, endpoint_source = DEFAULT_ENDPOINT, "the default (AWS S3; set EXPKIT_S3_ENDPOINT for another)"
        endpoint = parse_endpoint(raw, insecure=insecure, source=endpoint_source)
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or profile.get("region")
        if not region:
            # AWS answers with the bucket's region; other endpoints take the conventional default.
            region = None if _is_aws(endpoint) else DEFAULT_REGION
        if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_SECRET_ACCESS_KEY"):
            missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(v)]
            if missing:
                raise S3ConfigError(
                    f"{missing[0]} is not set while its partner is: set both, or unset both to use the profile file"
                )
            names = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" + (
                "/AWS_SESSION_TOKEN" if env.get("AWS_SESSION_TOKEN") else ""
            )
            access, secret, token = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
            source = f"the environment ({names})"
        elif profile.get("access_key_id") or profile.get("secret_access_key"):
            if not (profile.get("access_key_id") and profile.get("secret_access_key")):
                raise S3ConfigError(f"{where} sets only one of access_key_id and secret_access_key: set both")
            access, secret = str(profile["access_key_id"]), str(profile["secret_access_key"])
            token = str(profile["session_token"]) if profile.get("session_token") else None
            source = where
        else:
            access = secret = token = None
            source = "no credentials (anonymous requests; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        ca_bundle = env.get("EXPKIT_S3_CA_BUNDLE") or profile.get("ca_bundle") or None
        if ca_bundle is not None:
            ca_bundle = str(Path(str(ca_bundle)).expanduser())
            if not Path(ca_bundle).is_file():
                raise S3ConfigError(f"CA bundle {ca_bundle} (EXPKIT_S3_CA_BUNDLE or ca_bundle) is not a file")
        return cls(
            endpoint=endpoint,
            region=region,
            access_key=access,
            secret_key=secret,
            session_token=token,
            ca_bundle=ca_bundle,
            credentials_source=source,
            endpoint_source=endpoint_source,
        )


def parse_endpoint(raw: str, *, insecure: bool = False, source: str = "EXPKIT_S3_ENDPOINT") -> str:
    """Normalise an endpoint to ``scheme://host[:port]``. Without a scheme it is https, or http when
    ``insecure`` (``EXPKIT_S3_INSECURE=1``); an explicit scheme always wins."""
    text = raw.strip()
    if "://" not in text:
        text = ("http://" if insecure else "https://") + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise S3ConfigError(
            f"the S3 endpoint from {source} is not a URL: use e.g. https://s3.example.org or http://127.0.0.1:8333"
        ) from None
    if parts.username or parts.password or "@" in parts.netloc:
        raise S3ConfigError(
            f"the S3 endpoint from {source} contains credentials: remove them and use "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile file"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise S3ConfigError(f"the S3 endpoint {raw!r} from {source} must be http(s)://host[:port]")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise S3ConfigError(
            f"the S3 endpoint {raw!r} from {source} has a path: give only scheme://host[:port] "
            "and put the bucket and prefix in s3://bucket/prefix"
        )
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The profile file: ``$EXPKIT_CONFIG``, else ``$XDG_CONFIG_HOME/expkit/config.toml``
    (``~/.config/expkit/config.toml``)."""
    env = os.environ if environ is None else environ
    if env.get("EXPKIT_CONFIG"):
        return Path(env["EXPKIT_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "expkit" / "config.toml"


def _load_profile(env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The ``[s3]`` table of the profile file, overlaid with ``[s3.$EXPKIT_PROFILE]``; and a
    description of where it came from (never its values)."""
    path = config_path(env)
    name = env.get("EXPKIT_PROFILE") or None
    if not path.is_file():
        if env.get("EXPKIT_CONFIG") or name:
            what = "EXPKIT_CONFIG" if env.get("EXPKIT_CONFIG") else f"EXPKIT_PROFILE={name}"
            raise S3ConfigError(
                f"the profile file {path} ({what}) does not exist: create it (see docs/s3.md) or unset the variable"
            )
        return {}, ""
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise S3ConfigError(
                f"reading the profile file {path} needs Python 3.11+ (or 'pip install tomli'); "
                "or use the EXPKIT_S3_ENDPOINT and AWS_* environment variables"
            ) from None
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise S3ConfigError(f"cannot read the profile file {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise S3ConfigError(f"{path} is not valid TOML ({err})") from None
    table = doc.get("s3", {})
    if not isinstance(table, dict):
        raise S3ConfigError(f"{path}: 's3' must be a table, [s3]")
    if name is not None:
        prof = table.get(name)
        if not isinstance(prof, dict):
            names = sorted(k for k, v in table.items() if isinstance(v, dict))
            raise S3ConfigError(
                f"{path} has no profile [s3.{name}] (EXPKIT_PROFILE); it has: {', '.join(names) or 'none'}"
            )
        merged = {k: v for k, v in table.items() if not isinstance(v, dict)}
        merged.update(prof)
        where = f"profile [s3.{name}] in {path}"
    else:
        merged = {k: v for k, v in table.items() if not isinstance(v, dict)}
        where = f"[s3] in {path}"
    unknown = sorted(set(merged) - set(_PROFILE_KEYS))
    if unknown:
        raise S3ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(_PROFILE_KEYS)}")
    if "insecure" in merged and not isinstance(merged["insecure"], bool):
        raise S3ConfigError(f"{where}: 'insecure' must be true or false")
    if merged.get("secret_access_key"):
        try:
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                log.warning("%s holds a secret key but is readable by others: chmod 600 %s", path, path)
        except OSError:
            pass
    return merged, where


def _is_aws(endpoint: str) -> bool:
    host = endpoint.split("://", 1)[1].split(":")[0]
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """expkit's local cache directory: ``$EXPKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/expkit``
    (``~/.cache/expkit``)."""
    env = os.environ if environ is None else environ
    if env.get("EXPKIT_CACHE_DIR"):
        return Path(env["EXPKIT_CACHE_DIR"]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "expkit"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → ``(bucket, prefix)`` (prefix without slashes at either end)."""
    if not url.startswith("s3://"):
        raise S3ConfigError(f"--store {url!r} is not an s3:// URL: use s3://bucket/prefix")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise S3ConfigError(
            "the s3:// store URL must not contain credentials or a port: use s3://bucket/prefix "
            "and set EXPKIT_S3_ENDPOINT and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise S3ConfigError(
            f"--store {url!r}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.' and '-')"
        )
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ArtifactError:
            raise S3ConfigError(
                f"--store {url!r}: the prefix must be a plain path without '.', '..' or empty segments"
            ) from None
    return bucket, prefix


# ---------------------------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------------------------


@dataclass
class S3Stats:
    """What the store transferred since it was opened (or since :meth:`reset`). Thread-safe."""

    downloaded: int = 0  # objects whose body was fetched
    bytes_downloaded: int = 0
    cached: int = 0  # objects served from the local cache (unchanged ETag)
    uploaded: int = 0
    bytes_uploaded: int = 0
    deleted: int = 0
    listed: int = 0  # objects seen in listings
    retries: int = 0  # failed requests that were retried
    rejected: int = 0  # listed keys refused as unsafe
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def reset(self) -> None:
        with self._lock:
            for f in fields(self):
                if not f.name.startswith("_"):
                    setattr(self, f.name, 0)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


# ---------------------------------------------------------------------------------------------
# The local ETag cache
# ---------------------------------------------------------------------------------------------


class _CacheUnsafe(Exception):
    """The cache database's path is not a plain file inside the cache root."""


class ObjectCache:
    """The local ETag cache of one endpoint and bucket: one SQLite database,
    ``<root>/s3/<endpoint-hash>/<bucket>.sqlite`` (WAL mode), table ``objects(key TEXT PRIMARY KEY,
    etag TEXT, body BLOB)`` keyed by object name (prefix included, so stores under different
    prefixes of a bucket share it). Objects over :data:`CACHE_MAX_OBJECT` are not kept.

    One connection per object (and process), used under a lock, so any thread may call; other
    processes using the same database are safe through SQLite's locking, waiting up to
    :data:`CACHE_BUSY_TIMEOUT` for a lock. The path is built from a hash and a validated bucket
    name, and checked before use: the directories below ``root`` are real directories, the
    database and its ``-wal``/``-shm``/``-journal`` files are regular files (not symbolic links), and
    the resolved path is inside the resolved root. Any failure — an unsafe path, a corrupt or
    locked database, a full disk — logs one warning and turns the cache off for this object, so
    reads go to the endpoint and never fail because of the cache."""

    def __init__(self, root: str | Path, endpoint_id: str, bucket: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{1,64}", endpoint_id) or not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise S3ConfigError(f"cannot cache bucket {bucket!r}: not a valid bucket name")
        self.root = Path(root).absolute()
        self.path = self.root / "s3" / endpoint_id / f"{bucket}.sqlite"
        self.disabled = False
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"ObjectCache({str(self.path)!r}{', disabled' if self.disabled else ''})"

    # -- opening ---------------------------------------------------------------------------------
    def _check_path(self) -> None:
        """Make the cache directories (mode 0700) and check the database path; raise
        :class:`_CacheUnsafe` or OSError."""
        directory = self.path.parent
        os.makedirs(self.root, mode=0o700, exist_ok=True)  # the root itself may be a link the user made
        for level in (directory.parent, directory):  # <root>/s3, then <root>/s3/<endpoint-hash>
            try:
                os.mkdir(level, 0o700)
            except FileExistsError:
                pass
            if not stat.S_ISDIR(os.lstat(level).st_mode):  # checked before anything is made inside it
                raise _CacheUnsafe(f"{level} is a symbolic link or not a directory")
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                mode = os.lstat(f"{self.path}{suffix}").st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                raise _CacheUnsafe(f"{self.path}{suffix} is a symbolic link or not a regular file")
        expected = os.path.join(os.path.realpath(self.root), "s3", directory.name, self.path.name)
        if os.path.realpath(self.path) != expected:
            raise _CacheUnsafe(f"{self.path} resolves outside the cache root {self.root}")
        # Create the database file privately, never through a symbolic link planted meanwhile.
        fd = os.open(
            self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600
        )
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _CacheUnsafe(f"{self.path} is not a regular file")
        finally:
            os.close(fd)

    def _connection(self) -> sqlite3.Connection | None:
        """The open connection (made on first use, and again in a forked child); None when the
        cache is off. Called with the lock held."""
        if self.disabled:
            return None
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # a connection inherited through fork() must not be used, nor closed
        try:
            self._check_path()
            conn = sqlite3.connect(
                str(self.path), timeout=CACHE_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")  # fails here for a file that is not a database
                conn.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last commits on power loss is fine
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, etag TEXT NOT NULL, body BLOB NOT NULL)"
                )
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError, _CacheUnsafe) as err:
            self._fail("opening", err)
            return None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _fail(self, what: str, err: BaseException) -> None:
        """Turn the cache off for this object, with one warning (called with the lock held)."""
        self.disabled = True
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.close()
            except sqlite3.Error:
                pass
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        if isinstance(err, _CacheUnsafe):
            hint = "remove what is there: expkit only writes plain files under the cache root"
        elif "locked" in reason or "busy" in reason:
            hint = f"another process held its lock for over {CACHE_BUSY_TIMEOUT:g}s"
        else:
            hint = "delete the file if it is damaged"
        log.warning(
            "not using the local S3 cache %s (%s failed: %s): reading from the endpoint instead; %s",
            self.path,
            what,
            reason.splitlines()[0] if reason else type(err).__name__,
            hint,
        )

    # -- reading and writing -------------------------------------------------------------------
    def load_many(self, names: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        """``{name: (etag, body)}`` for the cached names among ``names`` (bulk reads, in chunks)."""
        out: dict[str, tuple[str, bytes]] = {}
        if not names:
            return out
        with self._lock:
            conn = self._connection()
            if conn is None:
                return out
            try:
                for start in range(0, len(names), _SQL_CHUNK):
                    chunk = names[start : start + _SQL_CHUNK]
                    sql = f"SELECT key, etag, body FROM objects WHERE key IN ({','.join('?' * len(chunk))})"
                    for name, etag, body in conn.execute(sql, chunk):
                        out[name] = (etag, body)
            except sqlite3.Error as err:
                self._fail("reading", err)
                return {}
        return out

    def load(self, name: str) -> tuple[str, bytes] | None:
        """``(etag, body)`` of one cached object, or None."""
        return self.load_many([name]).get(name)

    def store_many(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Keep ``(name, etag, body)`` rows, in one transaction; rows without an ETag or with a
        body over :data:`CACHE_MAX_OBJECT` are left out. Best effort: a failure turns the cache off."""
        rows = [r for r in rows if r[1] and len(r[2]) <= CACHE_MAX_OBJECT]
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            if conn is None:
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("INSERT OR REPLACE INTO objects (key, etag, body) VALUES (?, ?, ?)", rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.rollback()
                    raise
            except sqlite3.Error as err:
                self._fail("writing", err)


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------

_NOT_MODIFIED = object()


class _EndpointPoolManager(urllib3.PoolManager):
    """A PoolManager that hands requests for the store's endpoint (path-style URLs,
    ``scheme://host[:port]/...``) straight to one connection pool, skipping urllib3's per-request
    URL parsing and pool-key lookup (tens of microseconds, a few percent of a small GET's client
    CPU). Any other URL (e.g. AWS virtual-host-style names) and any redirect take the normal path."""

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = endpoint + "/"
        u = urllib3.util.parse_url(endpoint)
        port = u.port or (443 if u.scheme == "https" else 80)
        self._pool = self._new_pool(u.scheme or "http", u.host or "", port)  # not in self.pools: never evicted

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        if not url.startswith(self._base):
            return super().urlopen(method, url, redirect=redirect, **kw)
        kw.setdefault("headers", self.headers)
        response = self._pool.urlopen(method, url[len(self._base) - 1 :], assert_same_host=False, redirect=False, **kw)
        if redirect and response.get_redirect_location():
            response.drain_conn()
            return super().urlopen(method, url, redirect=redirect, **kw)
        return response

    def clear(self) -> None:
        super().clear()
        self._pool.close()


class S3Store(RunStore):
    """Runs in ``s3://bucket/prefix``. See the module docstring.

    ``workers`` bounds concurrent requests (and the connection pool); ``retry`` the retries;
    ``cache=False`` turns the local ETag cache off; ``cache_dir`` replaces the cache root."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        config: S3Config | None = None,
        *,
        url: str | None = None,
        workers: int = DEFAULT_WORKERS,
        retry: RetryPolicy | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        lean_reads: bool | None = None,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(f"s3://{bucket}/{prefix}")
        self.url = url or (f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}")
        self.config = config or S3Config.from_env()
        self.endpoint = self.config.endpoint
        self.workers = max(1, int(workers))
        self.retry = retry or RetryPolicy.from_env()
        self.stats = S3Stats()
        self._root = f"{self.prefix}/" if self.prefix else ""
        root = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()).absolute()
        self._endpoint_id = hashlib.sha256(self.endpoint.encode()).hexdigest()[:16]
        prefix_id = hashlib.sha256(self.prefix.encode()).hexdigest()[:12]
        self._staging_root = root / "staging" / self._endpoint_id / self.bucket / prefix_id
        #: The local ETag cache (None with ``cache=False``).
        self.cache: ObjectCache | None = ObjectCache(root, self._endpoint_id, self.bucket) if cache else None
        self._memo: dict[str, tuple[float, dict[str, str]]] = {}  # listed prefix -> (time, {key: etag})
        self._memo_lock = threading.Lock()
        self._generation = 0  # bumped by every write, so a listing that overlapped one is not remembered
        ca_certs = self.config.ca_bundle or os.environ.get("SSL_CERT_FILE") or certifi.where()
        http = _EndpointPoolManager(
            self.endpoint,
            num_pools=4,
            maxsize=self.workers,
            retries=False,  # our retry logic decides, not urllib3's
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_certs,
        )
        self._client = Minio(
            self.config.netloc,
            access_key=self.config.access_key,
            secret_key=self.config.secret_key,
            session_token=self.config.session_token,
            secure=self.config.secure,
            region=self.config.region,
            http_client=http,
        )
        #: List with the SDK's request method and a lean page parser (see :meth:`_list_pages`);
        #: False (or an SDK without ``Minio._execute``) uses ``Minio.list_objects``.
        self._list_requests = _sdk_has_execute()
        self._list_page = _PAGE
        #: :meth:`read_many` GETs with :class:`~expkit.stores.s3.wire.GetConnection` (a sixth of the
        #: SDK's client CPU per object) on path-style endpoints with a known region; AWS S3 (virtual-host
        #: style, region lookup) and ``lean_reads=False`` / ``EXPKIT_S3_LEAN_READS=0`` use the SDK.
        if lean_reads is None:
            lean_reads = os.environ.get("EXPKIT_S3_LEAN_READS", "1").strip().lower() not in _FALSE
        self.lean_reads = bool(lean_reads) and not _is_aws(self.endpoint) and bool(self.config.region)
        self._timeouts = (connect_timeout, read_timeout)
        self._ca_certs = ca_certs
        self._ssl_context: ssl.SSLContext | None = None  # made on first use (see _tls_context)
        self._signer = (
            s3wire.Signer(
                self.config.access_key, self.config.secret_key, str(self.config.region), self.config.session_token
            )
            if self.config.access_key and self.config.secret_key
            else None
        )

    @classmethod
    def from_url(cls, url: str, *, config: S3Config | None = None, **kwargs: Any) -> S3Store:
        """Open ``s3://bucket/prefix`` with the configuration from the environment / profile file."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, config, url=url, **kwargs)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    # -- naming --------------------------------------------------------------------------------
    def _obj(self, key: str) -> str:
        return self._root + key

    def _rel(self, name: str) -> str | None:
        """The store key of a listed object name, or None when it is not one (a directory marker,
        a staging/temporary leftover, or an unsafe name — logged and counted)."""
        if not name.startswith(self._root) or name.endswith("/"):
            return None
        key = name[len(self._root) :]
        try:
            check_key(key)
        except ArtifactError as err:
            self.stats.add(rejected=1)
            log.warning("ignoring object %r in %s: %s", name, self.url, err)
            return None
        parts = key.split("/")
        if ".staging" in parts or ".tmp-" in parts[-1]:
            return None
        return key

    def _dir_prefix(self, prefix: str) -> str:
        """A key prefix as a directory: '' (everything) or 'a/b/'."""
        prefix = prefix.strip("/")
        if not prefix:
            return ""
        check_key(prefix)
        return prefix + "/"

    # -- errors and retries --------------------------------------------------------------------
    def _translate(self, err: BaseException, what: str, key: str | None = None) -> StoreError:
        """Turn a non-transient failure into a one-line StoreError (never containing credentials)."""
        if isinstance(err, StoreError):
            return err
        if isinstance(err, S3Error):
            code = err.code or "error"
            if code in ("NoSuchKey", "NotFound") and key is not None:
                return ObjectNotFound(f"{key} not found in {self.url}")
            if code == "NoSuchBucket":
                return BucketNotFound(
                    f"bucket {self.bucket} does not exist at {self.endpoint}: create it or fix "
                    f"--store (endpoint from {self.config.endpoint_source})"
                )
            if code in _CREDENTIAL_CODES:
                return S3AuthError(
                    f"{self.endpoint} rejected the credentials from {self.config.credentials_source} "
                    f"({code}) while {what}: check the access key and secret key"
                )
            if code in _DENIED_CODES:
                return S3AuthError(
                    f"access denied to {self.url} at {self.endpoint} while {what}, with the "
                    f"credentials from {self.config.credentials_source}: they are wrong or lack "
                    "permission for this bucket"
                )
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
                return S3ConfigError(
                    f"bucket {self.bucket} is in another region or at another endpoint "
                    f"({code}): set AWS_REGION or EXPKIT_S3_ENDPOINT"
                )
            message = (err.message or "").splitlines()[0][:200] if err.message else ""
            return StoreError(
                f"S3 error {code} from {self.endpoint} while {what}" + (f": {message}" if message else "")
            )
        if isinstance(err, InvalidResponseError):
            status = getattr(err, "_code", "?")
            return StoreError(
                f"{self.endpoint} answered {what} with HTTP {status} and no S3 error document: "
                f"is it an S3 endpoint? (from {self.config.endpoint_source})"
            )
        if isinstance(err, ServerError):
            return StoreError(f"{self.endpoint} failed with HTTP {err.status_code} while {what}")
        if _ssl_error(err) is not None:
            reason = _short_reason(_ssl_error(err))
            hint = (
                "the server may speak plain http: write http://... in EXPKIT_S3_ENDPOINT"
                if "WRONG_VERSION_NUMBER" in reason or "wrong version" in reason
                else "for a private CA set EXPKIT_S3_CA_BUNDLE to its certificate file"
            )
            return S3TLSError(f"TLS connection to {self.endpoint} failed ({reason}) while {what}: {hint}")
        if isinstance(err, OSError) and not _is_network(err):
            return StoreError(f"local file error while {what}: {err.strerror or err}")
        return StoreError(f"{what} failed against {self.endpoint}: {_short_reason(err)}")

    def _give_up(self, err: BaseException, what: str, attempts: int) -> StoreError:
        reason = _short_reason(err)
        if _is_connection(err):
            return S3UnreachableError(
                f"cannot reach the S3 endpoint {self.endpoint} ({reason}) after {attempts} "
                f"attempts while {what}: check EXPKIT_S3_ENDPOINT (from "
                f"{self.config.endpoint_source}) and that the server is up",
                reason,
            )
        return S3TransferError(
            f"{what} failed {attempts} times at {self.endpoint} ({reason}): the server is failing; try again later",
            reason,
        )

    def _call(
        self, what: str, fn: Callable[[], T], *, key: str | None = None, abort: threading.Event | None = None
    ) -> T:
        """Run ``fn`` with bounded retries on transient failures; translate the final failure.
        When ``abort`` is set (another task gave up), stop retrying."""
        failures = 0
        while True:
            try:
                return fn()
            except Exception as err:  # noqa: BLE001 - classified below
                if not _is_transient(err):
                    raise self._translate(err, what, key) from None
                failures += 1
                if failures >= self.retry.attempts or (abort is not None and abort.is_set()):
                    raise self._give_up(err, what, failures) from None
                delay = self.retry.delay(failures)
                self.stats.add(retries=1)
                log.debug(
                    "retrying %s in %.2fs (attempt %d/%d failed: %s)",
                    what,
                    delay,
                    failures,
                    self.retry.attempts,
                    _short_reason(err),
                )
                if abort is not None:
                    abort.wait(delay)
                else:
                    time.sleep(delay)

    # -- listing -------------------------------------------------------------------------------
    def _list_level(
        self, obj_prefix: str, *, recursive: bool, limit: int | None = None, abort: threading.Event | None = None
    ) -> tuple[dict[str, str], list[str], bool]:
        """One listing of ``obj_prefix`` (all pages, or the first ``limit`` objects):
        ``({object name: etag}, [sub-prefixes], complete)``. A failed page is retried from where it stopped."""
        objects: dict[str, str] = {}
        prefixes: list[str] = []
        state: dict[str, Any] = {"after": None, "complete": True}

        def run() -> None:
            if self._list_requests:
                self._list_pages(obj_prefix, "" if recursive else "/", limit, objects, prefixes, state)
                return
            it = self._client.list_objects(
                self.bucket, prefix=obj_prefix, recursive=recursive, start_after=state["after"]
            )
            name = None
            try:
                for obj in it:
                    name = obj.object_name
                    if obj.is_dir:
                        prefixes.append(name)
                    else:
                        objects[name] = (obj.etag or "").strip('"')
                        if limit is not None and len(objects) >= limit:
                            state["complete"] = False
                            return
            finally:
                if name is not None:
                    state["after"] = name  # a retry goes on after the last object seen

        try:
            self._call(f"listing s3://{self.bucket}/{obj_prefix}", run, abort=abort)
        finally:
            self.stats.add(listed=len(objects))
        return objects, list(dict.fromkeys(prefixes)), state["complete"]

    def _list_pages(
        self,
        obj_prefix: str,
        delimiter: str,
        limit: int | None,
        objects: dict[str, str],
        prefixes: list[str],
        state: dict[str, Any],
    ) -> None:
        """ListObjectsV2 pages of ``obj_prefix`` into ``objects``/``prefixes``, from after
        ``state["after"]``. The requests are the SDK's (signed and sent by ``Minio._execute``, as
        ``Minio.list_objects`` does); only the page is parsed here, keeping the name and ETag of
        each object — about a fifth of the client CPU of the SDK's parse, which builds a full
        ``Object`` (dates included) per key."""
        token: str | None = None
        while True:
            query = {
                "list-type": "2",
                "delimiter": delimiter,
                "encoding-type": "url",
                "max-keys": str(self._list_page),
                "prefix": obj_prefix,
            }
            if token:
                query["continuation-token"] = token
            elif state["after"]:
                query["start-after"] = state["after"]
            resp = self._client._execute("GET", self.bucket, query_params=query)
            root = ElementTree.fromstring(resp.data)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            decode = unquote_plus if root.findtext(f"{ns}EncodingType") == "url" else str
            before = state["after"]
            for el in root.iterfind(f"{ns}Contents"):
                name = decode(el.findtext(f"{ns}Key") or "")
                objects[name] = (el.findtext(f"{ns}ETag") or "").strip('"')
                state["after"] = name
                if limit is not None and len(objects) >= limit:
                    state["complete"] = False
                    return
            for el in root.iterfind(f"{ns}CommonPrefixes"):
                prefixes.append(decode(el.findtext(f"{ns}Prefix") or ""))
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true":
                return
            token = root.findtext(f"{ns}NextContinuationToken")
            if not token:  # a server that pages without tokens: go on after the last key
                if prefixes and (state["after"] is None or prefixes[-1] > state["after"]):
                    state["after"] = prefixes[-1]
                if state["after"] == before:
                    raise StoreError(
                        f"listing s3://{self.bucket}/{obj_prefix} at {self.endpoint} does not "
                        "advance (a truncated page without a continuation token)"
                    )

    def _scan(self, prefix: str) -> dict[str, str]:
        """``{key: etag}`` of every object under the directory prefix ``prefix`` ('' or 'a/b/').

        Down to the dataset level of the layout (``<run>/runs/<algorithm>/<dataset>/``) the tree is
        walked with delimiter listings, level by level, each level's listings concurrent; below it
        every part is listed recursively, concurrently. A cell or deeper prefix takes one listing.
        The result is remembered for :data:`LISTING_TTL` seconds (see :meth:`read_many`)."""
        t0 = time.monotonic()
        generation = self._generation
        obj_prefix = self._obj(prefix)
        depth = max(0, _SPLIT_DEPTH - len([p for p in prefix.split("/") if p]))
        if depth == 0:
            names = self._list_level(obj_prefix, recursive=True)[0]
        else:
            names = {}
            frontier = [obj_prefix]
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="expkit-s3-list") as pool:
                for _ in range(depth):
                    levels = list(pool.map(lambda p: self._list_level(p, recursive=False), frontier))
                    frontier = []
                    for objs, subs, _ in levels:
                        names.update(objs)
                        frontier.extend(subs)
                    if not frontier:
                        break
                for objs, _, _ in pool.map(lambda p: self._list_level(p, recursive=True), frontier):
                    names.update(objs)
        etags: dict[str, str] = {}
        for name, etag in names.items():
            key = self._rel(name)
            if key is not None:
                etags[key] = etag
        with self._memo_lock:
            if generation == self._generation:  # no write through this store since the listing began
                self._memo[prefix] = (t0, etags)
        return etags

    def _listings(self) -> list[tuple[str, dict[str, str]]]:
        """The remembered listings younger than :data:`LISTING_TTL`, as ``(prefix, {key: etag})``,
        longest prefix first (see :func:`_lookup`)."""
        now = time.monotonic()
        with self._memo_lock:
            fresh = [(prefix, etags) for prefix, (when, etags) in self._memo.items() if now - when <= LISTING_TTL]
        fresh.sort(key=lambda item: len(item[0]), reverse=True)
        return fresh

    def _forget_listings(self) -> None:
        """Called around every write: remembered listings may be out of date now."""
        with self._memo_lock:
            self._memo.clear()
            self._generation += 1

    # -- primitives ----------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        check_key(key)
        name = self._obj(key)
        try:
            self._call(
                f"writing {key}",
                lambda: self._client.put_object(self.bucket, name, io.BytesIO(data), len(data)),
                key=key,
            )
        finally:
            self._forget_listings()
        self.stats.add(uploaded=1, bytes_uploaded=len(data))

    def get(self, key: str) -> bytes:
        check_key(key)
        name = self._obj(key)
        cached = self.cache.load(name) if self.cache is not None else None
        result = self._call(f"reading {key}", lambda: self._fetch(key, cached[0] if cached else None), key=key)
        if result is _NOT_MODIFIED and cached is not None:
            self.stats.add(cached=1)
            return cached[1]
        body, etag = result  # type: ignore[misc]
        self.stats.add(downloaded=1, bytes_downloaded=len(body))
        if self.cache is not None:
            self.cache.store_many([(name, etag, body)])
        return body

    def _tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of lean connections (None for http), made once, verifying certificates
        against the same CA bundle as the SDK's connections."""
        if self.config.secure and self._ssl_context is None:
            try:
                self._ssl_context = ssl.create_default_context(cafile=self._ca_certs)
            except (OSError, ssl.SSLError) as err:
                raise S3TLSError(
                    f"cannot load the CA certificates {self._ca_certs} ({_short_reason(err)}): set "
                    "EXPKIT_S3_CA_BUNDLE (or SSL_CERT_FILE) to a PEM file"
                ) from None
        return self._ssl_context

    def _connection(self) -> s3wire.GetConnection | None:
        """A lean GET connection for one worker thread of :meth:`read_many` (None: use the SDK)."""
        if not self.lean_reads:
            return None
        return s3wire.GetConnection(
            self.endpoint,
            self._signer,
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
            ssl_context=self._tls_context(),
        )

    def _fetch(self, key: str, if_none_match: str | None, conn: s3wire.GetConnection | None = None) -> object:
        """One GET: ``(body, etag)``, or :data:`_NOT_MODIFIED` for a matching ``if_none_match``.
        Counted in :attr:`stats` by the caller (in bulk, for :meth:`read_many`). With ``conn``,
        a 200 or 304 is read on that lean connection; any other answer is asked again through the
        SDK, so that every error is classified (and retried or reported) the same way."""
        if conn is not None:
            try:
                got = conn.get(self.bucket, self._root + key, if_none_match)
            except s3wire.Unhandled:
                pass
            else:
                return _NOT_MODIFIED if got is None else got
        headers = {"If-None-Match": f'"{if_none_match}"'} if if_none_match else None
        try:
            resp = self._client.get_object(self.bucket, self._root + key, request_headers=headers)
        except ServerError as err:
            if err.status_code == 304:
                return _NOT_MODIFIED
            raise
        try:
            body = resp.read()
            etag = resp.headers.get("ETag", "").strip('"')
        finally:
            resp.close()
            resp.release_conn()
        return body, etag

    def exists(self, key: str) -> bool:
        check_key(key)
        name = self._obj(key)
        try:
            self._call(f"checking {key}", lambda: self._client.stat_object(self.bucket, name), key=key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str) -> Iterator[str]:
        return iter(sorted(self._scan(self._dir_prefix(prefix))))

    def delete(self, prefix: str) -> None:
        prefix = prefix.strip("/")
        check_key(prefix)
        try:
            names = [self._obj(k) for k in self._scan(prefix + "/")]
            names.append(self._obj(prefix))  # the object named exactly ``prefix``, if any
            self._delete_names(names, f"deleting {prefix}")
        finally:
            self._forget_listings()

    def _delete_names(self, names: Sequence[str], what: str) -> None:
        for start in range(0, len(names), _PAGE):
            batch = names[start : start + _PAGE]

            def run(batch: Sequence[str] = batch) -> None:
                errors = list(self._client.remove_objects(self.bucket, [DeleteObject(n) for n in batch]))
                bad = [e for e in errors if e.code not in ("NoSuchKey", None)]
                if bad:
                    raise StoreError(
                        f"{what} in {self.url}: could not delete {bad[0].name} ({bad[0].code}) and {len(bad) - 1} more"
                    )

            self._call(what, run)
            self.stats.add(deleted=len(batch))

    def publish_cell(self, run_id: str, cell_key: str, src: Path) -> None:
        prefix = cell_prefix(run_id, cell_key)
        check_key(prefix.rstrip("/"))
        src = Path(src)
        if not (src / RUN_FILE).is_file():
            raise StoreError(f"refusing to publish {cell_key}: its staged directory has no {RUN_FILE}")
        files = _staged_files(src)
        try:
            self._publish(prefix, cell_key, src, files)
        finally:
            self._forget_listings()
        shutil.rmtree(src, ignore_errors=True)

    def _publish(self, prefix: str, cell_key: str, src: Path, files: Sequence[str]) -> None:
        existing = set(self._scan(prefix))
        new = {prefix + rel for rel in files}
        # 1. the old completion marker goes first: from here on the cell reads as incomplete
        if prefix + RUN_FILE in existing:
            self._delete_names([self._obj(prefix + RUN_FILE)], f"publishing {cell_key}")
        # 2. objects of the earlier attempt that the new one does not have
        stale = sorted(existing - new - {prefix + RUN_FILE})
        if stale:
            self._delete_names([self._obj(k) for k in stale], f"publishing {cell_key}")
        # 3. the new files, concurrently; 4. run.json last
        others = [rel for rel in files if rel != RUN_FILE]
        failed = self._upload_many(prefix, src, others, cell_key)
        if failed:
            names = ", ".join(sorted(failed)[:3]) + (", ..." if len(failed) > 3 else "")
            first = next(iter(failed.values()))
            raise type(first)(
                f"publishing {cell_key} to {self.url}: {len(failed)} of {len(files)} files were not "
                f"uploaded ({names}): {first}; the cell has no {RUN_FILE}, so resuming the run "
                "reruns it",
                first.reason,
            )
        self._upload_file(prefix + RUN_FILE, src / RUN_FILE)

    def _upload_file(self, key: str, path: Path, abort: threading.Event | None = None) -> None:
        name = self._obj(key)
        size = path.stat().st_size
        self._call(
            f"uploading {key}", lambda: self._client.fput_object(self.bucket, name, str(path)), key=key, abort=abort
        )
        self.stats.add(uploaded=1, bytes_uploaded=size)

    def _upload_many(self, prefix: str, src: Path, rels: Sequence[str], cell_key: str) -> dict[str, _GaveUp]:
        """Upload files concurrently; ``{rel: error}`` of those that failed after the retries.
        Non-transient errors (missing bucket, credentials) are raised at once."""
        if not rels:
            return {}
        abort = threading.Event()
        failed: dict[str, _GaveUp] = {}
        with ThreadPoolExecutor(max_workers=min(self.workers, len(rels)), thread_name_prefix="expkit-s3-put") as pool:
            futures = {pool.submit(self._upload_file, prefix + rel, src / rel, abort): rel for rel in rels}
            for fut, rel in futures.items():
                err = fut.exception()
                if err is None:
                    continue
                abort.set()  # the endpoint is failing (or worse): the others stop retrying
                if not isinstance(err, _GaveUp):
                    raise err
                failed[rel] = err
        return failed

    def staging_dir(self, run_id: str) -> Path:
        _check_segment(run_id)
        path = self._staging_root / run_id
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create the local staging directory {path}: {err.strerror}; "
                "set EXPKIT_CACHE_DIR to a writable directory"
            ) from None
        return path

    def clear_staging(self, run_id: str) -> None:
        _check_segment(run_id)
        shutil.rmtree(self._staging_root / run_id, ignore_errors=True)

    def list_runs(self) -> list[str]:
        _, subs, _ = self._list_level(self._root, recursive=False)
        candidates = [s[len(self._root) :].rstrip("/") for s in subs]
        candidates = [c for c in candidates if c and "/" not in c and not c.startswith(".")]
        if not candidates:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(candidates))) as pool:
            found = list(pool.map(lambda r: self.exists(f"{r}/{MANIFEST_KEY}"), candidates))
        return sorted(r for r, ok in zip(candidates, found) if ok)

    # -- built on the primitives, faster here --------------------------------------------------
    def completed_cells(self, run_id: str) -> set[str]:
        check_key(run_id)
        prefix = f"{run_id}/{RUNS_DIR}/"
        cells = set()
        for key in self._scan(prefix):
            parts = key[len(prefix) :].split("/")
            if len(parts) == 4 and parts[3] == RUN_FILE:
                cells.add("/".join(parts[:3]))
        return cells

    def cell_records(self, run_id: str, cell_keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """As the base class, but reading the records concurrently. A cell whose ``run.json``
        disappeared since it was listed (being republished) is left out."""
        cells = sorted(self.completed_cells(run_id) if cell_keys is None else cell_keys)
        keys = {cell_prefix(run_id, c) + RUN_FILE: c for c in cells}
        data = self.read_many(list(keys))
        out: dict[str, dict[str, Any]] = {}
        for key, body in data.items():
            try:
                doc = json.loads(body)
            except ValueError as err:
                raise ArtifactError(f"{key} in {self.url} is not valid JSON ({err})") from None
            out[keys[key]] = doc
        return out

    def read_many(self, keys: Sequence[str], *, on_progress: Callable[[int], None] | None = None) -> dict[str, bytes]:
        """Read many objects concurrently through the ETag cache; ``{key: data}`` for those that exist.

        Cached objects are validated against the ETags of a listing — a recent one made by this
        store (e.g. by :meth:`completed_cells`), else one listing of the keys' common prefix per
        run, or for a few keys a conditional GET each — and only new or changed objects are
        downloaded. The cache is read in bulk and written in batches from the calling thread; the
        worker threads only make requests. Raises :class:`S3TransferError` naming how many (and
        which) objects could not be read after the retries; those read are cached, so a rerun
        fetches only the rest."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        out: dict[str, bytes] = {}
        cached: dict[str, tuple[str, bytes]] = {}
        if self.cache is not None:
            root = self._root
            cached = {
                name[len(root) :]: entry for name, entry in self.cache.load_many([root + k for k in wanted]).items()
            }
        # Which cached entries are still current?
        listings = self._listings()
        groups: dict[str, list[str]] = {}  # per run: cached keys no recent listing covers
        for k in cached:
            if not _lookup(listings, k)[0]:
                groups.setdefault(k.split("/", 1)[0], []).append(k)
        for group in groups.values():
            common = os.path.commonprefix(group)
            if len(group) >= LIST_THRESHOLD and "/" in common:  # one listing beats a conditional GET per key
                self._scan(common[: common.rfind("/") + 1])
        if groups:
            listings = self._listings()
        todo: list[tuple[str, str | None]] = []  # (key, etag to send as If-None-Match)
        hits = 0
        for key in wanted:
            covered, etag = _lookup(listings, key)
            entry = cached.get(key)
            if covered:
                if etag is None:
                    continue  # not in the listing: missing
                if entry is not None and entry[0] == etag:
                    out[key] = entry[1]
                    hits += 1
                else:
                    todo.append((key, None))
            else:
                todo.append((key, entry[0] if entry else None))
        if hits:
            self.stats.add(cached=hits)
        done_already = len(wanted) - len(todo)  # cache hits, and keys a listing says are missing
        if done_already and on_progress:
            on_progress(done_already)
        if todo:
            self._get_many(todo, cached, out, on_progress)
        return out

    def _get_many(
        self,
        todo: Sequence[tuple[str, str | None]],
        cached: Mapping[str, tuple[str, bytes]],
        out: dict[str, bytes],
        on_progress: Callable[[int], None] | None,
    ) -> None:
        """GET ``todo`` with up to :attr:`workers` threads into ``out``. The threads only make the
        requests (no locks, counters or cache writes per object); this thread collects their
        results, counts them, reports progress and writes the cache in batches."""
        pending: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
        for item in todo:
            pending.put(item)
        results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        abort = threading.Event()
        call, fetch = self._call, self._fetch
        if self.lean_reads:
            self._tls_context()  # a bad CA file is one error here, not one per worker thread

        def worker() -> None:
            conn = None
            try:
                conn = self._connection()
                while not abort.is_set():
                    try:
                        key, etag = pending.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        result = call(f"reading {key}", lambda k=key, e=etag: fetch(k, e, conn), key=key, abort=abort)
                        results.put((key, result, None))
                    except BaseException as err:  # noqa: BLE001 - handed to the collecting thread
                        results.put((key, None, err))
            finally:
                if conn is not None:
                    conn.close()
                results.put(None)  # this worker is done

        threads = [
            threading.Thread(target=worker, name=f"expkit-s3-get-{i}", daemon=True)
            for i in range(min(self.workers, len(todo)))
        ]
        failures: dict[str, BaseException] = {}
        fatal: BaseException | None = None
        rows: list[tuple[str, str, bytes]] = []
        counts = {"downloaded": 0, "bytes_downloaded": 0, "cached": 0}
        cache, root = self.cache, self._root
        progress = 0
        try:
            for t in threads:
                t.start()
            running = len(threads)
            while running:
                item = results.get()
                if item is None:
                    running -= 1
                    continue
                key, result, err = item
                if err is None:
                    if result is _NOT_MODIFIED:
                        out[key] = cached[key][1]
                        counts["cached"] += 1
                    else:
                        body, etag = result
                        out[key] = body
                        counts["downloaded"] += 1
                        counts["bytes_downloaded"] += len(body)
                        if cache is not None:
                            rows.append((root + key, etag, body))
                            if len(rows) >= _CACHE_BATCH:
                                cache.store_many(rows)
                                rows = []
                elif isinstance(err, _GaveUp):
                    abort.set()  # the endpoint is failing: the queued reads are skipped, not retried
                    failures[key] = err
                elif not isinstance(err, ObjectNotFound):
                    abort.set()
                    fatal = fatal or err
                progress += 1
                if on_progress and progress >= _PROGRESS_STEP:
                    on_progress(progress)
                    progress = 0
        finally:
            abort.set()  # a no-op after a normal end; on an exception here, the workers stop soon
            for t in threads:
                t.join()
            self.stats.add(**counts)
            if rows and cache is not None:
                cache.store_many(rows)  # what was read is kept, even when some reads failed
        if on_progress and progress:
            on_progress(progress)
        if fatal is not None:
            raise fatal
        while True:  # reads never attempted because the endpoint was failing
            try:
                failures[pending.get_nowait()[0]] = _Skipped()
            except queue.Empty:
                break
        if failures:
            first = next((e for e in failures.values() if isinstance(e, _GaveUp)), None)
            sample = ", ".join(sorted(failures)[:3]) + (", ..." if len(failures) > 3 else "")
            cls = type(first) if first is not None else S3TransferError
            raise cls(
                f"could not read {len(failures)} of {len(todo)} objects from {self.url} ({sample}): "
                f"{first or 'aborted'}; the objects read are cached, so running the command again when the "
                "endpoint is back fetches only the rest",
                first.reason if first else "aborted",
            )

    @property
    def cache_path(self) -> Path | None:
        """The local cache database of this store's endpoint and bucket (None with ``cache=False``)."""
        return self.cache.path if self.cache is not None else None

    # -- buckets -------------------------------------------------------------------------------
    def create_bucket(self) -> None:
        """Create the store's bucket (CreateBucket, plain S3). A no-op when it exists and is ours."""

        def run() -> None:
            try:
                self._client.make_bucket(self.bucket, location=self.config.region or DEFAULT_REGION)
            except S3Error as err:
                if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        self._call(f"creating bucket {self.bucket}", run)

    def remove_bucket(self) -> None:
        """Remove the store's bucket; it must be empty (S3 semantics)."""
        self._call(f"removing bucket {self.bucket}", lambda: self._client.remove_bucket(self.bucket))

    def check(self) -> None:
        """Make one request (a one-key listing) so a missing bucket, wrong credentials or an
        unreachable endpoint surface now, as their :class:`StoreError`."""
        self._list_level(self._root, recursive=False, limit=1)


class _Skipped(Exception):
    """A queued read not attempted because the endpoint was already failing."""

    def __str__(self) -> str:
        return "not attempted: the endpoint was failing"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _sdk_has_execute() -> bool:
    """Whether the installed minio SDK has the request method :meth:`S3Store._list_pages` uses."""
    execute = getattr(Minio, "_execute", None)
    if not callable(execute):
        return False
    try:
        params = inspect.signature(execute).parameters
    except (TypeError, ValueError):
        return False
    return "query_params" in params and "bucket_name" in params


def _lookup(listings: Sequence[tuple[str, Mapping[str, str]]], key: str) -> tuple[bool, str | None]:
    """From listings ordered longest prefix first (:meth:`S3Store._listings`): ``(covered, etag)``,
    the ETag None when the covering listing did not have the key."""
    for prefix, etags in listings:
        if key.startswith(prefix):
            return True, etags.get(key)
    return False, None


def _check_segment(name: str) -> str:
    check_key(name)
    if "/" in name:
        raise ArtifactError(f"{name!r} is not a run id: run ids contain no '/'")
    return name


def _staged_files(src: Path) -> list[str]:
    """Relative '/'-paths of the regular files under ``src``; symlinks are skipped (logged)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(src):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():
                log.warning("not publishing %s: symbolic links are not uploaded", base / d)
                dirnames.remove(d)
        for name in filenames:
            path = base / name
            if path.is_symlink() or not path.is_file():
                log.warning("not publishing %s: only regular files are uploaded", path)
                continue
            rel = path.relative_to(src).as_posix()
            check_key(rel)
            files.append(rel)
    return sorted(files)


def _ssl_error(err: BaseException) -> BaseException | None:
    seen = 0
    cur: BaseException | None = err
    while cur is not None and seen < 5:
        if isinstance(cur, (urllib3.exceptions.SSLError, ssl.SSLError)):
            return cur
        cur = getattr(cur, "reason", None) if isinstance(cur, urllib3.exceptions.MaxRetryError) else cur.__context__
        seen += 1
    return None


def _is_network(err: BaseException) -> bool:
    return isinstance(err, (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError))


def _is_connection(err: BaseException) -> bool:
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    return isinstance(
        err,
        (
            urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.ConnectTimeoutError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.ReadTimeoutError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ),
    )


def _is_transient(err: BaseException) -> bool:
    """Worth retrying: connection failures, timeouts, 5xx/429 and throttling codes; not TLS errors."""
    if _ssl_error(err) is not None:
        return False
    if isinstance(err, S3Error):
        status = getattr(getattr(err, "response", None), "status", 0) or 0
        return err.code in _TRANSIENT_CODES or status >= 500 or status == 429
    if isinstance(err, ServerError):
        return err.status_code >= 500 or err.status_code == 429
    if isinstance(err, InvalidResponseError):
        status = getattr(err, "_code", 0)
        return isinstance(status, int) and (status >= 500 or status == 429)
    return _is_network(err)


def _short_reason(err: BaseException) -> str:
    """A short, credential-free reason: 'connection refused', 'HTTP 503', 'SlowDown', ..."""
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    if isinstance(err, S3Error):
        return err.code or "S3 error"
    if isinstance(err, ServerError):
        return f"HTTP {err.status_code}"
    if isinstance(err, InvalidResponseError):
        return f"HTTP {getattr(err, '_code', '?')}"
    text = str(err)
    m = re.search(r"\[SSL: ([A-Z_]+)\]\s*([^(]*)", text)
    if m:
        return (m.group(2).strip() or m.group(1).lower()).rstrip(" .")
    m = re.search(r"\[Errno -?\d+\] ([^)\]'\"]+)", text)
    if m:
        return m.group(1).strip().lower()
    if isinstance(err, urllib3.exceptions.ReadTimeoutError):
        return "read timed out"
    if isinstance(err, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(err, urllib3.exceptions.ProtocolError):
        return "connection broken"
    if isinstance(err, http.client.HTTPException):
        return "connection broken"
    return type(err).__name__
