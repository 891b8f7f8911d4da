"""A run store in an S3 bucket (``s3://bucket/prefix``), for any S3-compatible endpoint.

Same key layout as :class:`~expkit.stores.filesystem.FileStore` (see :mod:`expkit.stores.base`),
objects named ``<prefix>/<key>``. Only plain S3 API calls are used (GET/PUT/HEAD object,
ListObjectsV2, DeleteObjects, CreateBucket), so AWS S3, SeaweedFS, MinIO, Ceph RGW, Garage and
hosted services all work. Only the modules of :mod:`expkit.stores.s3` import :mod:`minio`.

Configuration (see ``docs/s3.md`` and :mod:`.config`) comes from the environment or a TOML profile file.

Publishing a cell deletes the earlier attempt's ``run.json`` first, then the earlier attempt's
other stale objects, uploads the new files and writes ``run.json`` last, so a reader never sees a
``run.json`` next to files of another attempt. Reads of many objects run concurrently (:mod:`.reads`)
and go through a local cache keyed by ETag (one SQLite database per endpoint and bucket, see
:class:`~expkit.stores.s3.cache.ObjectCache`): a second collection of an unchanged run downloads
nothing. Their GETs go over lean kept-alive connections (:mod:`expkit.stores.s3.wire`, a sixth of
the SDK's client CPU per object) on path-style endpoints; every answer other than 200/304 is asked
again through the SDK. Transient failures (connection refused or reset, timeouts, HTTP 5xx,
SlowDown) are retried with exponential backoff (:class:`~expkit.stores.s3.retry.RetryPolicy`); when
the retries run out the error names what is missing. Credentials never appear in
:attr:`S3Store.url`, ``repr``, log records or error messages.

The names this module had before the S3 store was split into modules are still importable from it.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import logging
import os
import shutil
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError
from minio.helpers import DictType

from expkit.core.contract import RUN_FILE
from expkit.core.errors import ArtifactError, StoreError
from expkit.runs.records import cell_record_or_failure
from expkit.stores.base import (
    MANIFEST_KEY,
    RUNS_DIR,
    ObjectNotFound,
    RunStore,
    cell_prefix,
    check_key,
    is_lease_key,
)
from expkit.stores.s3 import wire as s3wire
from expkit.stores.s3.cache import CACHE_BUSY_TIMEOUT, CACHE_MAX_OBJECT, ObjectCache
from expkit.stores.s3.config import (
    DEFAULT_ENDPOINT,
    DEFAULT_REGION,
    FALSE,
    S3Config,
    cache_root,
    config_path,
    is_aws,
    parse_endpoint,
    parse_s3_url,
)
from expkit.stores.s3.errors import (
    BucketNotFound,
    GaveUp,
    S3AuthError,
    S3ConfigError,
    S3TLSError,
    S3TransferError,
    S3UnreachableError,
)
from expkit.stores.s3.listing import (
    LIST_THRESHOLD,
    LISTING_TTL,
    PAGE,
    SPLIT_DEPTH,
    LevelResult,
    Listing,
    ListingMemo,
    list_objects_sdk,
    list_pages,
    lookup,
    sdk_has_execute,
    walk,
)
from expkit.stores.s3.reads import NOT_MODIFIED, BulkRead, Fetched, Wanted, plan_reads
from expkit.stores.s3.retry import RetryPolicy, call_with_retries
from expkit.stores.s3.stats import S3Stats
from expkit.stores.s3.transport import ca_certs, new_client, new_signer, tls_context

__all__ = [
    "CACHE_BUSY_TIMEOUT",
    "CACHE_MAX_OBJECT",
    "CONNECT_TIMEOUT",
    "DEFAULT_ENDPOINT",
    "DEFAULT_REGION",
    "DEFAULT_WORKERS",
    "LISTING_TTL",
    "LIST_THRESHOLD",
    "READ_TIMEOUT",
    "BucketNotFound",
    "ObjectCache",
    "RetryPolicy",
    "S3AuthError",
    "S3Config",
    "S3ConfigError",
    "S3Stats",
    "S3Store",
    "S3TLSError",
    "S3TransferError",
    "S3UnreachableError",
    "cache_root",
    "config_path",
    "parse_endpoint",
    "parse_s3_url",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Concurrent requests. On 2 CPUs shared with a local server, 12 to 48 cost the same CPU per object
#: and 8 or fewer more (bench/collect.py); against a remote endpoint they overlap latency.
DEFAULT_WORKERS = 16
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0


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
        self.retry = retry or RetryPolicy.from_env(config=self.config)
        self.stats = S3Stats()
        self._root = f"{self.prefix}/" if self.prefix else ""
        root = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()).absolute()
        self._endpoint_id = hashlib.sha256(self.endpoint.encode()).hexdigest()[:16]
        prefix_id = hashlib.sha256(self.prefix.encode()).hexdigest()[:12]
        self._staging_root = root / "staging" / self._endpoint_id / self.bucket / prefix_id
        self._local_root = root
        #: This session's local staging directory name (random): sessions never touch each other's files.
        self.session = uuid.uuid4().hex[:12]
        #: The local ETag cache (None with ``cache=False``).
        self.cache: ObjectCache | None = ObjectCache(root, self._endpoint_id, self.bucket) if cache else None
        self._memo = ListingMemo()
        self._ca_certs = ca_certs(self.config)
        self._client = new_client(
            self.config,
            workers=self.workers,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            cafile=self._ca_certs,
        )
        #: List with the SDK's request method and a lean page parser (see :func:`.listing.list_pages`);
        #: False (or an SDK without ``Minio._execute``) uses ``Minio.list_objects``.
        self._list_requests = sdk_has_execute()
        self._list_page = PAGE
        #: :meth:`read_many` GETs with :class:`~expkit.stores.s3.wire.GetConnection` (a sixth of the
        #: SDK's client CPU per object) on path-style endpoints with a known region; AWS S3 (virtual-host
        #: style, region lookup) and ``lean_reads=False`` / ``EXPKIT_S3_LEAN_READS=0`` use the SDK.
        if lean_reads is None:
            lean_reads = os.environ.get("EXPKIT_S3_LEAN_READS", "1").strip().lower() not in FALSE
        self.lean_reads = bool(lean_reads) and not is_aws(self.endpoint) and bool(self.config.region)
        self._timeouts = (connect_timeout, read_timeout)
        self._ssl_context: ssl.SSLContext | None = None  # made on first use (see _tls_context)
        self._signer = new_signer(self.config)

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

    # -- retries -------------------------------------------------------------------------------
    def _call(
        self, what: str, fn: Callable[[], T], *, key: str | None = None, abort: threading.Event | None = None
    ) -> T:
        """Run ``fn`` with bounded retries on transient failures; translate the final failure.
        When ``abort`` is set (another task gave up), stop retrying."""
        return call_with_retries(
            what, fn, policy=self.retry, where=self, on_retry=self._count_retry, key=key, abort=abort
        )

    def _count_retry(self) -> None:
        self.stats.add(retries=1)

    # -- listing -------------------------------------------------------------------------------
    def _list_level(
        self, obj_prefix: str, *, recursive: bool, limit: int | None = None, abort: threading.Event | None = None
    ) -> LevelResult:
        """One listing of ``obj_prefix`` (all pages, or the first ``limit`` objects):
        ``({object name: etag}, [sub-prefixes], complete)``. A failed page is retried from where it stopped."""
        listing = Listing()

        def run() -> None:
            if self._list_requests:
                delimiter = "" if recursive else "/"
                list_pages(
                    self._client,
                    self.bucket,
                    obj_prefix,
                    delimiter=delimiter,
                    limit=limit,
                    page_size=self._list_page,
                    into=listing,
                    endpoint=self.endpoint,
                )
            else:
                list_objects_sdk(self._client, self.bucket, obj_prefix, recursive=recursive, limit=limit, into=listing)

        try:
            self._call(f"listing s3://{self.bucket}/{obj_prefix}", run, abort=abort)
        finally:
            self.stats.add(listed=len(listing.objects))
        return listing.objects, list(dict.fromkeys(listing.prefixes)), listing.complete

    def _scan(self, prefix: str) -> dict[str, str]:
        """``{key: etag}`` of every object under the directory prefix ``prefix`` ('' or 'a/b/').

        Down to the dataset level of the layout (``<run>/runs/<algorithm>/<dataset>/``) the tree is
        walked with delimiter listings, level by level, each level's listings concurrent; below it
        every part is listed recursively, concurrently. A cell or deeper prefix takes one listing.
        The result is remembered for :data:`LISTING_TTL` seconds (see :meth:`read_many`)."""
        t0 = time.monotonic()
        generation = self._memo.generation
        depth = max(0, SPLIT_DEPTH - len([p for p in prefix.split("/") if p]))
        names = walk(
            lambda p, recursive: self._list_level(p, recursive=recursive), self._obj(prefix), depth, self.workers
        )
        etags: dict[str, str] = {}
        for name, etag in names.items():
            key = self._rel(name)
            if key is not None:
                etags[key] = etag
        self._memo.remember(prefix, etags, started=t0, generation=generation)
        return etags

    def _forget_listings(self) -> None:
        """Called around every write: remembered listings may be out of date now."""
        self._memo.forget()

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

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """A PUT with ``If-None-Match: *``: the server refuses it (412) when ``key`` exists, so of concurrent
        creators exactly one succeeds (AWS S3, MinIO, SeaweedFS >= 4; see docs/s3.md). A HEAD first: a
        server that ignores the header still refuses a writer that comes after the object exists."""
        check_key(key)
        name = self._obj(key)
        if self.exists(key):
            return False
        put_object = getattr(self._client, "_put_object", None)  # the SDK's PutObject taking raw headers

        def run() -> bool:
            try:
                if put_object is None:  # pragma: no cover - an SDK without it: the HEAD above is the check
                    self._client.put_object(self.bucket, name, io.BytesIO(data), len(data))
                else:
                    put_object(self.bucket, name, data, headers={"If-None-Match": "*"})
            except S3Error as err:
                if err.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False  # it exists (412), or another conditional write of it is in flight (409)
                raise
            return True

        try:
            created: bool = self._call(f"writing {key}", run, key=key)
        finally:
            self._forget_listings()
        if created:
            self.stats.add(uploaded=1, bytes_uploaded=len(data))
        return created

    def get(self, key: str) -> bytes:
        check_key(key)
        name = self._obj(key)
        cached = self.cache.load(name) if self.cache is not None else None
        result = self._call(f"reading {key}", lambda: self._fetch(key, cached[0] if cached else None), key=key)
        if result is NOT_MODIFIED:
            if cached is None:  # only a request with If-None-Match (a cached ETag) can be answered 304
                raise StoreError(f"{self.endpoint} answered reading {key} with 304 Not Modified, unasked")
            self.stats.add(cached=1)
            return cached[1]
        body, etag = result
        self.stats.add(downloaded=1, bytes_downloaded=len(body))
        if self.cache is not None:
            self.cache.store_many([(name, etag, body)])
        return body

    def _tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of lean connections (None for http), made once, verifying certificates
        against the same CA bundle as the SDK's connections."""
        if self.config.secure and self._ssl_context is None:
            self._ssl_context = tls_context(self._ca_certs)
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

    def _fetch(self, key: str, if_none_match: str | None, conn: s3wire.GetConnection | None = None) -> Fetched:
        """One GET: ``(body, etag)``, or :data:`~expkit.stores.s3.reads.NOT_MODIFIED` for a matching
        ``if_none_match``. Counted in :attr:`stats` by the caller (in bulk, for :meth:`read_many`).
        With ``conn``, a 200 or 304 is read on that lean connection; any other answer is asked again
        through the SDK, so that every error is classified (and retried or reported) the same way."""
        if conn is not None:
            try:
                got = conn.get(self.bucket, self._root + key, if_none_match)
            except s3wire.Unhandled:
                pass
            else:
                return NOT_MODIFIED if got is None else got
        headers: DictType | None = {"If-None-Match": f'"{if_none_match}"'} if if_none_match else None
        try:
            resp = self._client.get_object(self.bucket, self._root + key, request_headers=headers)
        except ServerError as err:
            if err.status_code == 304:
                return NOT_MODIFIED
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
        return iter(sorted(k for k in self._scan(self._dir_prefix(prefix)) if not is_lease_key(k)))

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
        for start in range(0, len(names), PAGE):
            batch = names[start : start + PAGE]

            def run(batch: Sequence[str] = batch) -> None:
                errors = builtins.list(self._client.remove_objects(self.bucket, [DeleteObject(n) for n in batch]))
                bad = [e for e in errors if e.code not in ("NoSuchKey", None)]
                if bad:
                    raise StoreError(
                        f"{what} in {self.url}: could not delete {bad[0].name} ({bad[0].code}) and {len(bad) - 1} more"
                    )

            self._call(what, run)
            self.stats.add(deleted=len(batch))

    # -- publishing ----------------------------------------------------------------------------
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

    def _upload_many(self, prefix: str, src: Path, rels: Sequence[str], cell_key: str) -> dict[str, GaveUp]:
        """Upload files concurrently; ``{rel: error}`` of those that failed after the retries.
        Non-transient errors (missing bucket, credentials) are raised at once."""
        if not rels:
            return {}
        abort = threading.Event()
        failed: dict[str, GaveUp] = {}
        with ThreadPoolExecutor(max_workers=min(self.workers, len(rels)), thread_name_prefix="expkit-s3-put") as pool:
            futures = {pool.submit(self._upload_file, prefix + rel, src / rel, abort): rel for rel in rels}
            for fut, rel in futures.items():
                err = fut.exception()
                if err is None:
                    continue
                abort.set()  # the endpoint is failing (or worse): the others stop retrying
                if not isinstance(err, GaveUp):
                    raise err
                failed[rel] = err
        return failed

    def get_file(self, key: str, dest: Path) -> None:
        """Download the object at ``key`` into the local file ``dest`` (streamed, retried)."""
        check_key(key)
        name = self._obj(key)
        self._call(f"reading {key}", lambda: self._client.fget_object(self.bucket, name, str(dest)), key=key)
        self.stats.add(downloaded=1, bytes_downloaded=dest.stat().st_size)

    def put_file(self, key: str, src: Path) -> None:
        """Upload the local file ``src`` at ``key`` (streamed, retried)."""
        check_key(key)
        try:
            self._upload_file(key, src)
        finally:
            self._forget_listings()

    def local_dirs(self) -> builtins.list[Path]:
        """The local cache and staging root (never part of a run's code)."""
        return [self._local_root]

    def staging_dir(self, run_id: str) -> Path:
        _check_segment(run_id)
        path = self._staging_root / run_id / self.session
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create the local staging directory {path}: {err.strerror}; "
                "set EXPKIT_CACHE_DIR to a writable directory"
            ) from None
        return path

    def clear_staging(self, run_id: str, *, all_sessions: bool = False) -> None:
        """Remove this session's local staging directory of the run; with ``all_sessions``, every
        session's on this machine (only for the holder of the run's lease)."""
        _check_segment(run_id)
        staging = self._staging_root / run_id
        shutil.rmtree(staging if all_sessions else staging / self.session, ignore_errors=True)
        try:
            staging.rmdir()  # when no other session stages there
        except OSError:
            pass

    # -- built on the primitives, faster here --------------------------------------------------
    def list_runs(self) -> builtins.list[str]:
        _, subs, _ = self._list_level(self._root, recursive=False)
        candidates = [s[len(self._root) :].rstrip("/") for s in subs]
        candidates = [c for c in candidates if c and "/" not in c and not c.startswith(".")]
        if not candidates:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(candidates))) as pool:
            found = builtins.list(pool.map(lambda r: self.exists(f"{r}/{MANIFEST_KEY}"), candidates))
        return sorted(r for r, ok in zip(candidates, found) if ok)

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
        data = self.read_many(builtins.list(keys))
        # Each record is checked; a bad one stands in as a failed record saying why (see RunStore.cell_records).
        return {keys[key]: cell_record_or_failure(body, f"{self.url}/{key}", keys[key]) for key, body in data.items()}

    def read_many(self, keys: Sequence[str], *, on_progress: Callable[[int], None] | None = None) -> dict[str, bytes]:
        """Read many objects concurrently through the ETag cache; ``{key: data}`` for those that exist.

        Cached objects are validated against the ETags of a listing — a recent one made by this
        store (e.g. by :meth:`completed_cells`), else one listing of the keys' common prefix per
        run, or for a few keys a conditional GET each — and only new or changed objects are
        downloaded. The cache is read in bulk and written in batches from the calling thread; the
        worker threads only make requests. Raises :class:`S3TransferError` naming how many (and
        which) objects could not be read after the retries; those read are cached, so a rerun
        fetches only the rest."""
        wanted = builtins.list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        cached: dict[str, tuple[str, bytes]] = {}
        if self.cache is not None:
            root = self._root
            cached = {
                name[len(root) :]: entry for name, entry in self.cache.load_many([root + k for k in wanted]).items()
            }
        out, todo, hits = plan_reads(wanted, cached, self._validating_listings(cached))
        if hits:
            self.stats.add(cached=hits)
        done_already = len(wanted) - len(todo)  # cache hits, and keys a listing says are missing
        if done_already and on_progress:
            on_progress(done_already)
        if todo:
            self._get_many(todo, cached, out, on_progress)
        return out

    def _validating_listings(
        self, cached: Mapping[str, tuple[str, bytes]]
    ) -> builtins.list[tuple[str, dict[str, str]]]:
        """Recent listings covering the cached keys: for each run whose cached keys no remembered
        listing covers, one listing of their common prefix when there are many of them (one listing
        beats a conditional GET per key)."""
        listings = self._memo.fresh()
        groups: dict[str, builtins.list[str]] = {}  # per run: cached keys no recent listing covers
        for k in cached:
            if not lookup(listings, k)[0]:
                groups.setdefault(k.split("/", 1)[0], []).append(k)
        for group in groups.values():
            common = os.path.commonprefix(group)
            if len(group) >= LIST_THRESHOLD and "/" in common:
                self._scan(common[: common.rfind("/") + 1])
        return self._memo.fresh() if groups else listings

    def _get_many(
        self,
        todo: Sequence[Wanted],
        cached: Mapping[str, tuple[str, bytes]],
        out: dict[str, bytes],
        on_progress: Callable[[int], None] | None,
    ) -> None:
        """GET ``todo`` with up to :attr:`workers` threads into ``out`` (see
        :class:`~expkit.stores.s3.reads.BulkRead`)."""
        bulk = BulkRead(todo, cached, out, cache=self.cache, root=self._root, stats=self.stats, on_progress=on_progress)
        call, fetch = self._call, self._fetch
        if self.lean_reads:
            self._tls_context()  # a bad CA file is one error here, not one per worker thread

        def get_one(key: str, etag: str | None, conn: s3wire.GetConnection | None) -> Fetched:
            return call(f"reading {key}", lambda: fetch(key, etag, conn), key=key, abort=bulk.abort)

        bulk.run(min(self.workers, len(todo)), self._connection, get_one)
        bulk.finish(self.url)

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


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


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
