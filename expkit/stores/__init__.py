"""Run stores: where every run's spec, manifest and per-cell results live.

:func:`open_store` picks the implementation from a URL: a path (the default ``./expkit-runs``) or
``s3://bucket/prefix``.
"""

from __future__ import annotations

import os

from expkit.stores.base import ObjectNotFound, RunStore, cell_prefix, check_key
from expkit.stores.filesystem import FileStore

DEFAULT_STORE = "expkit-runs"
STORE_ENV = "EXPKIT_STORE"

__all__ = ["DEFAULT_STORE", "FileStore", "ObjectNotFound", "RunStore", "cell_prefix", "check_key", "open_store"]


def store_url(url: str | None = None) -> str:
    """The store URL in effect: the argument, else ``$EXPKIT_STORE``, else ``./expkit-runs``."""
    return url or os.environ.get(STORE_ENV) or DEFAULT_STORE


def open_store(url: str | None = None) -> RunStore:
    """Open the run store named by ``url`` (see :func:`store_url`)."""
    url = store_url(url)
    if url.startswith("s3://"):
        from expkit.stores.s3.store import S3Store  # only this module imports minio

        return S3Store.from_url(url)
    if "://" in url:
        from expkit.core.errors import InputError

        raise InputError(f"--store {url!r}: use a directory path or s3://bucket/prefix")
    return FileStore(url)
