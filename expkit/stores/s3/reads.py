"""Bulk reads of the S3 store: which objects :meth:`S3Store.read_many
<expkit.stores.s3.store.S3Store.read_many>` must fetch (:func:`plan_reads`) and the concurrent GETs
that fetch them (:class:`BulkRead`).

The worker threads only make requests (no locks, counters or cache writes per object); the calling
thread collects their results, counts them, reports progress and writes the cache in batches.
"""

from __future__ import annotations

import enum
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal, NamedTuple, Union

from expkit.stores.base import ObjectNotFound
from expkit.stores.s3 import wire as s3wire
from expkit.stores.s3.cache import CACHE_BATCH, ObjectCache
from expkit.stores.s3.errors import GaveUp, S3TransferError
from expkit.stores.s3.listing import lookup
from expkit.stores.s3.stats import S3Stats

_PROGRESS_STEP = 64  # read_many reports progress every this many objects


class _Unchanged(enum.Enum):
    NOT_MODIFIED = "not modified"


#: What a conditional GET returns when the object still has the ETag sent as ``If-None-Match``.
NOT_MODIFIED: Final = _Unchanged.NOT_MODIFIED
#: What one GET returns: ``(body, etag)``, or :data:`NOT_MODIFIED`.
Fetched = Union[tuple[bytes, str], Literal[_Unchanged.NOT_MODIFIED]]
#: A GET to make: ``(key, etag to send as If-None-Match, or None)``.
Wanted = tuple[str, Union[str, None]]
#: Opens a lean connection for one worker thread (None: use the SDK).
Connect = Callable[[], Union[s3wire.GetConnection, None]]
#: Makes one GET (with retries) on the worker's connection: ``get_one(key, etag, conn)``.
GetOne = Callable[[str, Union[str, None], Union[s3wire.GetConnection, None]], Fetched]


class ReadPlan(NamedTuple):
    """What a bulk read needs: ``out`` holds the cache hits, ``todo`` the GETs to make, ``hits``
    counts the cache hits."""

    out: dict[str, bytes]
    todo: list[Wanted]
    hits: int


def plan_reads(
    wanted: Sequence[str],
    cached: Mapping[str, tuple[str, bytes]],
    listings: Sequence[tuple[str, Mapping[str, str]]],
) -> ReadPlan:
    """Compare the cached entries with the listings (longest prefix first). A listed key whose
    cached ETag matches is a hit; a listed key without a current entry is fetched; a key a listing
    lacks is missing (neither); a key no listing covers is fetched, conditionally when cached."""
    out: dict[str, bytes] = {}
    todo: list[Wanted] = []
    hits = 0
    for key in wanted:
        covered, etag = lookup(listings, key)
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
    return ReadPlan(out, todo, hits)


class _Skipped(Exception):
    """A queued read not attempted because the endpoint was already failing."""

    def __str__(self) -> str:
        return "not attempted: the endpoint was failing"


class BulkRead:
    """One bulk GET of ``todo`` into ``out``: :meth:`run` the worker threads and collect their
    results, then :meth:`finish` to report progress and raise what failed. ``cached`` has the
    bodies of the keys GET with ``If-None-Match``; new bodies go to ``cache`` as ``root + key``."""

    def __init__(
        self,
        todo: Sequence[Wanted],
        cached: Mapping[str, tuple[str, bytes]],
        out: dict[str, bytes],
        *,
        cache: ObjectCache | None,
        root: str,
        stats: S3Stats,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        self.total = len(todo)
        self.pending: queue.SimpleQueue[Wanted] = queue.SimpleQueue()
        for item in todo:
            self.pending.put(item)
        #: ``(key, result or error)`` per GET, and None from each worker when it is done.
        self.results: queue.SimpleQueue[tuple[str, Fetched | BaseException] | None] = queue.SimpleQueue()
        #: Set when the endpoint is failing (or worse): the workers stop taking reads.
        self.abort = threading.Event()
        self._cached, self._out, self._cache, self._root = cached, out, cache, root
        self._stats, self._on_progress = stats, on_progress
        self._failures: dict[str, BaseException] = {}
        self._fatal: BaseException | None = None
        self._rows: list[tuple[str, str, bytes]] = []
        self._counts = {"downloaded": 0, "bytes_downloaded": 0, "cached": 0}
        self._progress = 0

    def run(self, workers: int, connect: Connect, get_one: GetOne) -> None:
        """GET everything with ``workers`` threads, each with its own ``connect()`` connection.
        However this ends, the threads are joined, the counts added to the stats and what was
        read is kept in the cache."""
        threads = [
            threading.Thread(target=self._worker, args=(connect, get_one), name=f"expkit-s3-get-{i}", daemon=True)
            for i in range(workers)
        ]
        try:
            for t in threads:
                t.start()
            self._collect(len(threads))
        finally:
            self.abort.set()  # a no-op after a normal end; on an exception here, the workers stop soon
            for t in threads:
                t.join()
            self._stats.add(**self._counts)
            if self._rows and self._cache is not None:
                self._cache.store_many(self._rows)  # what was read is kept, even when some reads failed

    def _worker(self, connect: Connect, get_one: GetOne) -> None:
        conn = None
        try:
            conn = connect()
            while not self.abort.is_set():
                try:
                    key, etag = self.pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    self.results.put((key, get_one(key, etag, conn)))
                except BaseException as err:  # noqa: BLE001 - handed to the collecting thread
                    self.results.put((key, err))
        finally:
            if conn is not None:
                conn.close()
            self.results.put(None)  # this worker is done

    def _collect(self, running: int) -> None:
        while running:
            item = self.results.get()
            if item is None:
                running -= 1
                continue
            self._take(*item)
            self._progress += 1
            if self._on_progress and self._progress >= _PROGRESS_STEP:
                self._on_progress(self._progress)
                self._progress = 0

    def _take(self, key: str, got: Fetched | BaseException) -> None:
        if isinstance(got, BaseException):
            if isinstance(got, GaveUp):
                self.abort.set()  # the endpoint is failing: the queued reads are skipped, not retried
                self._failures[key] = got
            elif not isinstance(got, ObjectNotFound):
                self.abort.set()
                self._fatal = self._fatal or got
        elif got is NOT_MODIFIED:
            self._out[key] = self._cached[key][1]
            self._counts["cached"] += 1
        else:
            body, etag = got
            self._out[key] = body
            self._counts["downloaded"] += 1
            self._counts["bytes_downloaded"] += len(body)
            if self._cache is not None:
                self._rows.append((self._root + key, etag, body))
                if len(self._rows) >= CACHE_BATCH:
                    self._cache.store_many(self._rows)
                    self._rows = []

    def finish(self, url: str) -> None:
        """Report the last progress; raise the first fatal error, else :class:`S3TransferError`
        (or :class:`~expkit.stores.s3.errors.S3UnreachableError`) naming the reads that failed or
        were never attempted."""
        if self._on_progress and self._progress:
            self._on_progress(self._progress)
        if self._fatal is not None:
            raise self._fatal
        while True:  # reads never attempted because the endpoint was failing
            try:
                self._failures[self.pending.get_nowait()[0]] = _Skipped()
            except queue.Empty:
                break
        failures = self._failures
        if failures:
            first = next((e for e in failures.values() if isinstance(e, GaveUp)), None)
            sample = ", ".join(sorted(failures)[:3]) + (", ..." if len(failures) > 3 else "")
            cls = type(first) if first is not None else S3TransferError
            raise cls(
                f"could not read {len(failures)} of {self.total} objects from {url} ({sample}): "
                f"{first or 'aborted'}; the objects read are cached, so running the command again when the "
                "endpoint is back fetches only the rest",
                first.reason if first else "aborted",
            )
