"""The local ETag cache of the S3 store: one SQLite database per endpoint and bucket.

A second collection of an unchanged run downloads nothing: the store validates the cached
objects against the ETags of a listing (or with conditional GETs) and reads only new or changed
objects. The cache is best effort: any failure turns it off for the store object, with one
warning, and the reads go to the endpoint.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from expkit.stores.s3.config import valid_bucket
from expkit.stores.s3.errors import S3ConfigError

log = logging.getLogger(__name__)

#: Objects larger than this are never kept in the local cache.
CACHE_MAX_OBJECT = 8 * 1024 * 1024
#: Seconds a cache read or write waits for another process holding the cache database's lock;
#: after that the cache is turned off for the store object (a warning), the reads go on.
CACHE_BUSY_TIMEOUT = 10.0
#: Objects per cache write transaction of a bulk read.
CACHE_BATCH = 1000
_SQL_CHUNK = 500  # keys per "key IN (...)" query (SQLite allowed at most 999 parameters before 3.32)
#: The database and the files SQLite keeps next to it.
_SUFFIXES = ("", "-wal", "-shm", "-journal")


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
        if not re.fullmatch(r"[0-9a-f]{1,64}", endpoint_id) or not valid_bucket(bucket):
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
        for suffix in _SUFFIXES:
            try:
                mode = os.lstat(f"{self.path}{suffix}").st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                raise _CacheUnsafe(f"{self.path}{suffix} is a symbolic link or not a regular file")
        expected = os.path.join(os.path.realpath(self.root), "s3", directory.name, self.path.name)
        if os.path.realpath(self.path) != expected:
            raise _CacheUnsafe(f"{self.path} resolves outside the cache root {self.root}")
        self._create_file()

    def _create_file(self) -> None:
        """Create the database file privately, never through a symbolic link planted meanwhile."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o600)
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
        kept = [r for r in rows if r[1] and len(r[2]) <= CACHE_MAX_OBJECT]
        if not kept:
            return
        with self._lock:
            conn = self._connection()
            if conn is None:
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("INSERT OR REPLACE INTO objects (key, etag, body) VALUES (?, ?, ?)", kept)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.rollback()
                    raise
            except sqlite3.Error as err:
                self._fail("writing", err)
