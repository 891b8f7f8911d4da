"""A run store in a local directory (the default: ``./expkit-runs``)."""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from expkit.core.contract import RESULT_FILE, RUN_FILE
from expkit.core.diskfull import disk_full_error, is_disk_full
from expkit.core.errors import ExpkitError, StoreError
from expkit.stores.base import MANIFEST_KEY, ObjectNotFound, RunStore, cell_prefix, check_key, is_lease_key

STAGING = ".staging"
_TMP_MARK = ".tmp-"


class FileStore(RunStore):
    """Objects are files under ``root``. Writes go to a temporary name and are renamed into place;
    a cell is published by renaming its staged directory (which already holds ``run.json``) into
    place in one step, so a reader sees the whole cell or none of it. Each store object is one session:
    it stages in ``<run-id>/.staging/<session>/`` and its cleanup removes only that."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(root)
        #: This session's staging directory name (random): sessions never touch each other's staged files.
        self.session = uuid.uuid4().hex[:12]

    def _path(self, key: str) -> Path:
        check_key(key)
        path = self.root / key
        # Defence in depth: the resolved path must stay under the root.
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise StoreError(f"key {key!r} escapes the store root {self.url}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{uuid.uuid4().hex[:8]}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(tmp, data)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise self._write_error(key, err, len(data)) from err

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist: the complete file is written under a temporary name,
        then hard-linked to ``key`` (``link`` fails when ``key`` exists, atomically, and a reader never
        sees a partial file); where hard links are not supported, ``O_CREAT | O_EXCL``."""
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{uuid.uuid4().hex[:8]}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(tmp, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                return _create_exclusive(path, data)
            return True
        except OSError as err:
            raise self._write_error(key, err, len(data)) from err
        finally:
            tmp.unlink(missing_ok=True)

    def _write_error(self, key: str, err: OSError, needed: int | None = None) -> ExpkitError:
        """The error for a failed write of ``key``: a full disk names the path and the space."""
        if is_disk_full(err):
            return disk_full_error(self.root / key, needed=needed)
        return StoreError(f"cannot write {key} under {self.url}: {err.strerror}")

    def put_file(self, key: str, src: Path) -> None:
        """Copy the local file ``src`` to ``key`` (streamed; a temporary name renamed into place)."""
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{uuid.uuid4().hex[:8]}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise self._write_error(key, err) from err

    def local_path(self, key: str) -> Path | None:
        """The file holding the object at ``key`` (None when there is none)."""
        path = self._path(key)
        return path if path.is_file() else None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{key} not found in {self.url}") from None
        except OSError as err:
            raise StoreError(f"cannot read {key} under {self.url}: {err.strerror}") from err

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        if not base.is_dir():
            return
        root_str = str(self.root)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != STAGING and _TMP_MARK not in d]
            rel = dirpath[len(root_str) + 1 :].replace(os.sep, "/")
            for name in filenames:
                key = f"{rel}/{name}" if rel else name
                if _TMP_MARK not in name and not is_lease_key(key):
                    yield key

    def delete(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def completed_cells(self, run_id: str) -> set[str]:
        # Faster than listing every file: the layout is exactly three levels deep.
        runs = self._path(run_id) / "runs"
        if not runs.is_dir():
            return set()
        # Skip a previous attempt's directory that publish_cell has moved aside (``<rep>.tmp-old-*``).
        return {
            f"{a}/{d}/{r}"
            for a, d, r, _ in (p.relative_to(runs).parts for p in runs.glob(f"*/*/*/{RUN_FILE}"))
            if _TMP_MARK not in r
        }

    def publish_cell(self, run_id: str, cell_key: str, src: Path) -> None:
        final = self._path(cell_prefix(run_id, cell_key).rstrip("/"))
        if not (src / RUN_FILE).is_file():
            raise StoreError(f"refusing to publish {cell_key}: its staged directory has no {RUN_FILE}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            old = None
            if final.exists():
                old = final.with_name(f"{final.name}{_TMP_MARK}old-{uuid.uuid4().hex[:8]}")
                os.replace(final, old)
            os.replace(src, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(final) from err
            raise StoreError(f"cannot publish {cell_key} under {self.url}: {err.strerror}") from err

    def cells_without_result(self, run_id: str, cell_keys: Iterable[str]) -> set[str]:
        runs = self._path(run_id) / "runs"
        return {c for c in cell_keys if not (runs / c / RESULT_FILE).is_file()}

    def staging_dir(self, run_id: str) -> Path:
        # Inside the run's directory: the same file system, so publishing is a rename. One per session.
        path = self._path(run_id) / STAGING / self.session
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(path) from err
            raise StoreError(f"cannot create the staging directory {path}: {err.strerror}") from err
        return path

    def clear_staging(self, run_id: str, *, all_sessions: bool = False) -> None:
        """Remove this session's staged files; with ``all_sessions``, every session's (only for the
        holder of the run's lease: leftovers of sessions that were killed)."""
        staging = self._path(run_id) / STAGING
        shutil.rmtree(staging if all_sessions else staging / self.session, ignore_errors=True)
        try:
            staging.rmdir()  # when no other session stages there
        except OSError:
            pass

    def local_dirs(self) -> builtins.list[Path]:
        """The store's directory."""
        return [self.root]

    def list_runs(self) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST_KEY).is_file())


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path`` and flush it to disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _create_exclusive(path: Path, data: bytes) -> bool:
    """``O_CREAT | O_EXCL``: create ``path`` holding ``data`` unless it exists (False then)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return True
