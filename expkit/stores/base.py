"""The run-store interface and the key layout every store shares.

Layout (keys are ``/``-separated, relative to the store's root)::

    <run-id>/experiment.yml                       the resolved spec
    <run-id>/manifest.json                        provenance
    <run-id>/prepare.log                          the prepare step's log, when there is one
    <run-id>/runs/<algorithm>/<dataset>/<replicate>/
        result.json  log.txt  <other outputs>     what the run wrote
        run.json                                  status record, written LAST: the completion marker

A cell is complete exactly when its ``run.json`` exists; readers ignore everything under a cell
without one. A store implements six primitives (:meth:`RunStore.put`, :meth:`get`, :meth:`list`,
:meth:`delete`, :meth:`publish_cell`, :meth:`staging_dir`); everything else is built on them here.
"""

from __future__ import annotations

import builtins
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from expkit.core.contract import RUN_FILE
from expkit.core.errors import ArtifactError, RunNotFound, StoreError

SPEC_KEY = "experiment.yml"
MANIFEST_KEY = "manifest.json"
PREPARE_LOG_KEY = "prepare.log"
RUNS_DIR = "runs"
_RUN_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ObjectNotFound(StoreError):
    """The key does not exist in the store."""


def check_key(key: str) -> str:
    """Reject keys that could escape the store's root: absolute, ``..``, empty segments, backslashes."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ArtifactError(f"unsafe object key {key!r}: keys must be relative '/'-separated paths")
    parts = key.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts) or re.match(r"^[A-Za-z]:", key):
        raise ArtifactError(f"unsafe object key {key!r}: '..', '.', empty segments and drive letters are not allowed")
    return key


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` when it looks like a run id; raise :class:`RunNotFound` otherwise."""
    if not _RUN_ID_RE.match(run_id) or len(run_id) > 63:
        raise RunNotFound(f"{run_id!r} is not a run id: run ids look like '<experiment>-<5 chars>' (see 'expkit list')")
    return run_id


def cell_prefix(run_id: str, cell_key: str) -> str:
    """The key prefix of a cell's objects: ``<run-id>/runs/<cell_key>/``."""
    return f"{run_id}/{RUNS_DIR}/{cell_key}/"


class RunStore(ABC):
    """Where runs live. Implementations: :class:`~expkit.stores.filesystem.FileStore` (a directory)
    and the S3 store. All methods may raise :class:`~expkit.core.errors.StoreError`."""

    #: Where the store is, as the user wrote it, never containing credentials.
    url: str

    # -- primitives ---------------------------------------------------------------------------
    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically: readers see the old object, none, or all of the new one."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Read the object at ``key``; raise :class:`ObjectNotFound` when it does not exist."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (recursive), in no particular order; staging areas excluded."""

    @abstractmethod
    def delete(self, prefix: str) -> None:
        """Remove every object under ``prefix`` (a no-op when there is none)."""

    @abstractmethod
    def publish_cell(self, run_id: str, cell_key: str, src: Path) -> None:
        """Publish a finished cell: every file under the local directory ``src`` goes to
        ``<run-id>/runs/<cell_key>/``, ``run.json`` last, replacing an earlier attempt. ``src`` is
        consumed. A reader never sees ``run.json`` before the other files are complete."""

    @abstractmethod
    def staging_dir(self, run_id: str) -> Path:
        """A local directory where an executor may stage cell outputs before publishing them."""

    @abstractmethod
    def list_runs(self) -> builtins.list[str]:
        """Ids of the runs in the store (those with a manifest)."""

    # -- built on the primitives --------------------------------------------------------------
    def read_many(self, keys: Sequence[str], *, on_progress: Callable[[int], None] | None = None) -> dict[str, bytes]:
        """Read many objects; returns ``{key: data}`` for those that exist (missing keys are absent).
        ``on_progress(n)`` is called with the number of objects finished since the last call.
        Stores that can read concurrently override this (the S3 store does)."""
        out: dict[str, bytes] = {}
        for key in keys:
            try:
                out[key] = self.get(key)
            except ObjectNotFound:
                pass
            if on_progress:
                on_progress(1)
        return out

    def get_json(self, key: str) -> Any:
        """The object at ``key`` parsed as JSON; :class:`ArtifactError` when it is not JSON."""
        data = self.get(key)
        try:
            return json.loads(data)
        except ValueError as err:
            raise ArtifactError(f"{key} in {self.url} is not valid JSON ({err})") from None

    def put_json(self, key: str, doc: Any) -> None:
        """Write ``doc`` at ``key`` as indented JSON with sorted keys."""
        self.put(key, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        try:
            self.get(key)
        except ObjectNotFound:
            return False
        return True

    def completed_cells(self, run_id: str) -> set[str]:
        """Cell keys (``alg/ds/rep``) that have a completion marker."""
        prefix = f"{run_id}/{RUNS_DIR}/"
        suffix = "/" + RUN_FILE
        return {k[len(prefix) : -len(suffix)] for k in self.list(prefix) if k.endswith(suffix)}

    def cell_records(self, run_id: str, cell_keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """The ``run.json`` record of every completed cell (or of the given ones)."""
        keys = self.completed_cells(run_id) if cell_keys is None else cell_keys
        return {k: self.get_json(cell_prefix(run_id, k) + RUN_FILE) for k in keys}

    def manifest(self, run_id: str) -> dict[str, Any]:
        """The run's ``manifest.json``; :class:`RunNotFound` when there is no such run."""
        check_run_id(run_id)
        try:
            doc: dict[str, Any] = self.get_json(f"{run_id}/{MANIFEST_KEY}")
        except ObjectNotFound:
            raise RunNotFound(f"no run {run_id!r} in {self.url}: see 'expkit list' for the runs there") from None
        return doc

    def spec_text(self, run_id: str) -> str:
        """The run's resolved spec (``experiment.yml``) as text."""
        try:
            return self.get(f"{run_id}/{SPEC_KEY}").decode()
        except ObjectNotFound:
            raise RunNotFound(f"run {run_id!r} in {self.url} has no {SPEC_KEY}") from None

    def resolve_run_id(self, ref: str) -> str:
        """``latest`` → the newest run; otherwise check the run exists and return its id."""
        if ref == "latest":
            runs = self.list_runs()
            if not runs:
                raise RunNotFound(f"no runs in {self.url} yet: start one with 'expkit run FILE'")
            return max(runs, key=lambda r: (self.manifest(r).get("started_at", ""), r))
        self.manifest(ref)
        return ref
