"""Listing the objects of an S3 store: ListObjectsV2 pages, walking a run's key tree concurrently,
and remembering recent listings so that :meth:`S3Store.read_many
<expkit.stores.s3.store.S3Store.read_many>` can validate its cache against their ETags.

The listing requests are the minio SDK's (signed and sent by ``Minio._execute``, as
``Minio.list_objects`` does); only each page is parsed here, keeping the name and ETag of each
object — about a fifth of the client CPU of the SDK's parse, which builds a full ``Object``
(dates included) per key. With an SDK that lacks that request method, ``Minio.list_objects`` is used.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import unquote_plus
from xml.etree import ElementTree

from minio import Minio
from minio.helpers import DictType

from expkit.core.errors import StoreError

#: A listing made by this store object is trusted for ETags this long (seconds).
LISTING_TTL = 60.0
#: With at least this many cached keys to validate, list their prefix instead of asking per key.
LIST_THRESHOLD = 32
#: S3 returns at most 1000 keys per listing page, and deletes at most 1000 per request.
PAGE = 1000
#: Listings split by delimiter down to ``<run>/runs/<algorithm>/<dataset>/``.
SPLIT_DEPTH = 4

#: One listing of a prefix: ``({object name: etag}, [sub-prefixes], complete)``.
LevelResult = tuple[dict[str, str], list[str], bool]


@dataclass
class Listing:
    """A listing in progress: the objects and sub-prefixes seen so far, the last name seen (a
    retry goes on after it), and whether it is complete (False when it stopped at a limit)."""

    objects: dict[str, str] = field(default_factory=dict)
    prefixes: list[str] = field(default_factory=list)
    after: str | None = None
    complete: bool = True

    def add_object(self, name: str, etag: str, limit: int | None) -> bool:
        """Record one object; False when that reached ``limit`` (the listing stops, incomplete)."""
        self.objects[name] = etag
        self.after = name
        if limit is not None and len(self.objects) >= limit:
            self.complete = False
            return False
        return True


class ListPage(NamedTuple):
    """One parsed ListObjectsV2 page."""

    objects: list[tuple[str, str]]  # (name, etag without quotes), in listing order
    prefixes: list[str]
    truncated: bool
    token: str | None  # NextContinuationToken


def parse_list_page(data: bytes) -> ListPage:
    """Parse a ListObjectsV2 answer, keeping only names, ETags, common prefixes and paging."""
    root = ElementTree.fromstring(data)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    decode: Callable[[str], str] = unquote_plus if root.findtext(f"{ns}EncodingType") == "url" else str
    objects = [
        (decode(el.findtext(f"{ns}Key") or ""), (el.findtext(f"{ns}ETag") or "").strip('"'))
        for el in root.iterfind(f"{ns}Contents")
    ]
    prefixes = [decode(el.findtext(f"{ns}Prefix") or "") for el in root.iterfind(f"{ns}CommonPrefixes")]
    truncated = (root.findtext(f"{ns}IsTruncated") or "").lower() == "true"
    return ListPage(objects, prefixes, truncated, root.findtext(f"{ns}NextContinuationToken"))


def list_pages(
    client: Minio,
    bucket: str,
    obj_prefix: str,
    *,
    delimiter: str,
    limit: int | None,
    page_size: int,
    into: Listing,
    endpoint: str,
) -> None:
    """ListObjectsV2 pages of ``obj_prefix`` into ``into``, from after ``into.after``, with the
    SDK's request method and :func:`parse_list_page` (``endpoint`` is for the error message)."""
    token: str | None = None
    while True:
        query: DictType = {
            "list-type": "2",
            "delimiter": delimiter,
            "encoding-type": "url",
            "max-keys": str(page_size),
            "prefix": obj_prefix,
        }
        if token:
            query["continuation-token"] = token
        elif into.after:
            query["start-after"] = into.after
        page = parse_list_page(client._execute("GET", bucket, query_params=query).data)
        before = into.after
        for name, etag in page.objects:
            if not into.add_object(name, etag, limit):
                return
        into.prefixes.extend(page.prefixes)
        if not page.truncated:
            return
        token = page.token
        if not token:  # a server that pages without tokens: go on after the last key
            if into.prefixes and (into.after is None or into.prefixes[-1] > into.after):
                into.after = into.prefixes[-1]
            if into.after == before:
                raise StoreError(
                    f"listing s3://{bucket}/{obj_prefix} at {endpoint} does not "
                    "advance (a truncated page without a continuation token)"
                )


def list_objects_sdk(
    client: Minio, bucket: str, obj_prefix: str, *, recursive: bool, limit: int | None, into: Listing
) -> None:
    """The same as :func:`list_pages`, through ``Minio.list_objects`` (which parses every field)."""
    name = None
    try:
        for obj in client.list_objects(bucket, prefix=obj_prefix, recursive=recursive, start_after=into.after):
            if obj.object_name is None:  # every listed object has a name; the SDK's type allows None
                continue
            name = obj.object_name
            if obj.is_dir:
                into.prefixes.append(name)
            elif not into.add_object(name, (obj.etag or "").strip('"'), limit):
                return
    finally:
        if name is not None:
            into.after = name  # a retry goes on after the last object seen


def walk(list_level: Callable[[str, bool], LevelResult], obj_prefix: str, depth: int, workers: int) -> dict[str, str]:
    """``{object name: etag}`` under ``obj_prefix``: ``depth`` levels of delimiter listings
    (``list_level(prefix, recursive=False)``), each level's listings concurrent, then a recursive
    listing of every prefix found at the last level, concurrently. Depth 0 is one recursive listing."""
    if depth == 0:
        return list_level(obj_prefix, True)[0]
    names: dict[str, str] = {}
    frontier = [obj_prefix]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="expkit-s3-list") as pool:
        for _ in range(depth):
            levels = list(pool.map(lambda p: list_level(p, False), frontier))
            frontier = []
            for objs, subs, _ in levels:
                names.update(objs)
                frontier.extend(subs)
            if not frontier:
                break
        for objs, _, _ in pool.map(lambda p: list_level(p, True), frontier):
            names.update(objs)
    return names


class ListingMemo:
    """The listings one store object made recently, by key prefix: ``{key: etag}`` each, trusted
    for :data:`LISTING_TTL` seconds. Every write forgets them all and bumps :attr:`generation`,
    so that a listing that overlapped a write is not remembered. Thread-safe."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[float, dict[str, str]]] = {}  # listed prefix -> (time, {key: etag})
        self._lock = threading.Lock()
        self.generation = 0

    def remember(self, prefix: str, etags: dict[str, str], *, started: float, generation: int) -> None:
        """Keep the listing of ``prefix`` begun at ``started`` (``time.monotonic()``) when no write
        happened since :attr:`generation` was ``generation``."""
        with self._lock:
            if generation == self.generation:
                self._memo[prefix] = (started, etags)

    def fresh(self) -> list[tuple[str, dict[str, str]]]:
        """The remembered listings younger than :data:`LISTING_TTL`, as ``(prefix, {key: etag})``,
        longest prefix first (see :func:`lookup`)."""
        now = time.monotonic()
        with self._lock:
            found = [(prefix, etags) for prefix, (when, etags) in self._memo.items() if now - when <= LISTING_TTL]
        found.sort(key=lambda item: len(item[0]), reverse=True)
        return found

    def forget(self) -> None:
        """Called around every write: remembered listings may be out of date now."""
        with self._lock:
            self._memo.clear()
            self.generation += 1


def lookup(listings: Sequence[tuple[str, Mapping[str, str]]], key: str) -> tuple[bool, str | None]:
    """From listings ordered longest prefix first (:meth:`ListingMemo.fresh`): ``(covered, etag)``,
    the ETag None when the covering listing did not have the key."""
    for prefix, etags in listings:
        if key.startswith(prefix):
            return True, etags.get(key)
    return False, None


def sdk_has_execute() -> bool:
    """Whether the installed minio SDK has the request method :func:`list_pages` uses."""
    execute = getattr(Minio, "_execute", None)
    if not callable(execute):
        return False
    try:
        params = inspect.signature(execute).parameters
    except (TypeError, ValueError):
        return False
    return "query_params" in params and "bucket_name" in params
