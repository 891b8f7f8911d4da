"""What an S3 store transferred: :class:`S3Stats`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


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
        """Add ``counts`` (``name=n``) to the counters."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def reset(self) -> None:
        """Set every counter to zero."""
        with self._lock:
            for f in fields(self):
                if not f.name.startswith("_"):
                    setattr(self, f.name, 0)

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
