"""A full disk as one line: which path could not be written, how much space is free there, how much the
write needed, and what to do.

:func:`is_disk_full` recognises the failure (``ENOSPC``, or ``EDQUOT`` for a used-up quota) anywhere in an
exception's chain; :func:`disk_full_error` turns it into a :class:`~expkit.core.errors.DiskFull`.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from expkit.core.errors import DiskFull

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err``, its cause or its context is an :class:`OSError` saying the disk (or quota) is full."""
    return disk_full_cause(err) is not None


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free to this user on the file system holding ``path`` (or its nearest existing parent); None
    when that cannot be told."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``0 bytes``, ``512 bytes``, ``4.0 KiB``, ``1.5 MiB``, ``2.0 GiB``."""
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def disk_full_error(path: str | os.PathLike[str], *, needed: int | None = None, then: str = "") -> DiskFull:
    """The one-line error for a write to ``path`` that found no space: the path, the free space there,
    ``needed`` bytes when known, and ``then`` (what to do after freeing space, e.g. how to resume)."""
    free = free_bytes(path)
    where = f"{format_bytes(free)} free there" if free is not None else "free space unknown"
    need = f", about {format_bytes(needed)} needed" if needed is not None else ""
    todo = "free some space" + (f", then {then}" if then else " and try again")
    message = f"no space left on device writing {os.fspath(path)} ({where}{need}): {todo}"
    return DiskFull(message, path=os.fspath(path), free=free, needed=needed)


def disk_full_cause(err: BaseException | None) -> BaseException | None:
    """The exception in ``err``'s chain saying the disk is full (a :class:`DiskFull` or an ``OSError``); None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFull) or (isinstance(err, OSError) and err.errno in _FULL):
            return err
        err = err.__cause__ or err.__context__
    return None
