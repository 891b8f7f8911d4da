"""A run store in a local directory (the default: ``./expkit-runs``)."""

from __future__ import annotations

import builtins
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from expkit.core.contract import RUN_FILE
from expkit.core.errors import StoreError
from expkit.stores.base import MANIFEST_KEY, ObjectNotFound, RunStore, cell_prefix, check_key

STAGING = ".staging"
_TMP_MARK = ".tmp-"


class FileStore(RunStore):
    """Objects are files under ``root``. Writes go to a temporary name and are renamed into place;
    a cell is published by renaming its staged directory (which already holds ``run.json``) into
    place in one step, so a reader sees the whole cell or none of it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(root)

    def _path(self, key: str) -> Path:
        check_key(key)
        path = self.root / key
        # Defence in depth: the resolved path must stay under the root.
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise StoreError(f"key {key!r} escapes the store root {self.url}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}{_TMP_MARK}{uuid.uuid4().hex[:8]}")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as err:
            raise StoreError(f"cannot write {key} under {self.url}: {err.strerror}") from err

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
                if _TMP_MARK not in name:
                    yield f"{rel}/{name}" if rel else name

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
            raise StoreError(f"cannot publish {cell_key} under {self.url}: {err.strerror}") from err

    def staging_dir(self, run_id: str) -> Path:
        # Inside the run's directory: the same file system, so publishing is a rename.
        path = self._path(run_id) / STAGING
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clear_staging(self, run_id: str) -> None:
        shutil.rmtree(self._path(run_id) / STAGING, ignore_errors=True)

    def list_runs(self) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST_KEY).is_file())
