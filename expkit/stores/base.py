"""The run-store interface and the key layout every store shares.

Layout (keys are ``/``-separated, relative to the store's root)::

    <run-id>/experiment.yml                       the resolved spec
    <run-id>/manifest.json                        provenance
    <run-id>/prepare.log                          the prepare step's log, when there is one
    <run-id>/runs/<algorithm>/<dataset>/<replicate>/
        result.json  log.txt  <other outputs>     what the run wrote
        run.json                                  status record, written LAST: the completion marker

A cell is complete exactly when its ``run.json`` exists; readers ignore everything under a cell
without one. A store implements seven primitives (:meth:`RunStore.put`, :meth:`put_if_absent`,
:meth:`get`, :meth:`list`, :meth:`delete`, :meth:`publish_cell`, :meth:`staging_dir`); everything else
is built on them here.

``<run-id>/lease.json`` (and, during a takeover, ``lease.json.takeover-*``) is the run's writer lease
(:mod:`expkit.stores.lease`): store-internal, never listed by :meth:`RunStore.list`, never exported.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from expkit.core.contract import RESULT_FILE, RUN_FILE
from expkit.core.errors import ArtifactError, InputError, RunNotFound, StoreError
from expkit.core.safejson import load_json

SPEC_KEY = "experiment.yml"
MANIFEST_KEY = "manifest.json"
PREPARE_LOG_KEY = "prepare.log"
RUNS_DIR = "runs"
LEASE_KEY = "lease.json"  # <run-id>/lease.json: the run's writer lease (expkit.stores.lease)
_RUN_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DAMAGED = "the manifest was not written by expkit or is damaged: restore it, or delete the run"

log = logging.getLogger(__name__)


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


def is_lease_key(key: str) -> bool:
    """Whether ``key`` is a run's lease object (``<run-id>/lease.json`` or a takeover claim next to it):
    store-internal, so :meth:`RunStore.list` leaves it out."""
    run, _, name = key.partition("/")
    return bool(run) and "/" not in name and name.startswith(LEASE_KEY)


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
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` holding ``data`` only if no object exists there; True when this call created it.
        Of concurrent callers at most one gets True (a directory: a hard link or ``O_EXCL``; S3:
        ``If-None-Match: *``). Readers see none or all of ``data``. The run lease is built on it."""

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

    def local_dirs(self) -> builtins.list[Path]:
        """Local directories this store writes into (its root, caches, staging): never a run's code."""
        return []

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
        """The object at ``key`` parsed as JSON within :func:`~expkit.core.safejson.load_json`'s limits
        (size, nesting, integer digits); :class:`ArtifactError` when it is not JSON or over a limit."""
        return load_json(self.get(key), what=f"{key} in {self.url}")

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
        """The ``run.json`` record of every completed cell (or of the given ones), each checked
        (:mod:`expkit.runs.records`): a record that is not valid stands in as a failed one saying why.
        A cell whose ``run.json`` disappeared since it was listed is left out."""
        from expkit.runs.records import cell_record_or_failure  # pydantic: not on a Slurm task's path

        keys = self.completed_cells(run_id) if cell_keys is None else cell_keys
        out: dict[str, dict[str, Any]] = {}
        for k in keys:
            key = cell_prefix(run_id, k) + RUN_FILE
            try:
                data = self.get(key)
            except ObjectNotFound:
                continue
            out[k] = cell_record_or_failure(data, f"{self.url}/{key}", k)
        return out

    def checked_cell_records(self, run_id: str, cell_keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """:meth:`cell_records`, where a cell marked succeeded whose ``result.json`` is gone (lost outputs)
        counts as failed, with the reason: what ``show``, ``list``, the run's counts and ``--rerun-failed``
        go by."""
        records = self.cell_records(run_id, cell_keys)
        succeeded = [k for k, r in records.items() if r.get("status") == "succeeded"]
        for cell in self.cells_without_result(run_id, succeeded):
            records[cell] = {
                **records[cell],
                "status": "failed",
                "reason": f"{RESULT_FILE} is missing from a cell marked succeeded (its outputs were lost); "
                f"rerun it: expkit run --resume {run_id} --rerun-failed",
            }
        return records

    def cells_without_result(self, run_id: str, cell_keys: Iterable[str]) -> set[str]:
        """Those of ``cell_keys`` that have no ``result.json`` (one listing of the run's cells here;
        a directory checks each file)."""
        prefix = f"{run_id}/{RUNS_DIR}/"
        present = set(self.list(prefix))
        return {c for c in cell_keys if f"{prefix}{c}/{RESULT_FILE}" not in present}

    def manifest(self, run_id: str) -> dict[str, Any]:
        """The run's ``manifest.json``, checked (:class:`~expkit.runs.records.Manifest`); :class:`RunNotFound`
        when there is no such run, :class:`~expkit.core.errors.InputError` naming the field when it is bad."""
        from expkit.runs.records import load_manifest  # pydantic: not on a Slurm task's path

        check_run_id(run_id)
        key = f"{run_id}/{MANIFEST_KEY}"
        try:
            data = self.get(key)
        except ObjectNotFound:
            raise RunNotFound(f"no run {run_id!r} in {self.url}: see 'expkit list' for the runs there") from None
        where = f"{self.url}/{key}"
        doc = load_manifest(data, where, _DAMAGED)
        if doc["run_id"] != run_id:
            raise InputError(f"{where}: run_id: names {doc['run_id']!r}, not {run_id!r}; {_DAMAGED}")
        return doc

    def spec_text(self, run_id: str) -> str:
        """The run's resolved spec (``experiment.yml``) as text."""
        try:
            return self.get(f"{run_id}/{SPEC_KEY}").decode()
        except ObjectNotFound:
            raise RunNotFound(f"run {run_id!r} in {self.url} has no {SPEC_KEY}") from None
        except UnicodeDecodeError as err:
            raise ArtifactError(
                f"{run_id}/{SPEC_KEY} in {self.url} is not UTF-8 text ({err.reason} at byte {err.start}): "
                "the stored spec is damaged; restore it, or delete the run"
            ) from None

    def resolve_run_id(self, ref: str) -> str:
        """``latest`` → :meth:`latest_run`; otherwise check the run exists and return its id."""
        if ref == "latest":
            return self.latest_run()
        self.manifest(ref)
        return ref

    def latest_run(self) -> str:
        """The newest run made in this store by this user: not imported, ordered by the time expkit set when it
        created the run (never a bundle's claim). Runs whose manifest is bad are skipped (and logged)."""
        from expkit.runs.records import current_user, is_imported, store_time

        runs = self.list_runs()
        if not runs:
            raise RunNotFound(f"no runs in {self.url} yet: start one with 'expkit run FILE'")
        me = current_user()
        best: tuple[Any, str] | None = None
        skipped = {"imported": 0, "by other users": 0, "unreadable": 0}
        for run_id in runs:
            try:
                manifest = self.manifest(run_id)
            except RunNotFound:
                continue  # deleted since it was listed
            except InputError as err:
                log.warning("'latest' skips run %s: %s", run_id, err)
                skipped["unreadable"] += 1
                continue
            if is_imported(manifest):
                skipped["imported"] += 1
            elif me and isinstance(manifest.get("user"), str) and manifest["user"] != me:
                skipped["by other users"] += 1
            elif best is None or (store_time(manifest), run_id) > best:
                best = (store_time(manifest), run_id)
        if best is None:
            why = ", ".join(f"{n} {what}" for what, n in skipped.items() if n)
            raise RunNotFound(
                f"'latest' is the newest run made in {self.url} by you, and there is none ({why}): "
                "name the run (see 'expkit list')"
            )
        return best[1]

    # -- large objects, in constant memory ----------------------------------------------------
    def local_path(self, key: str) -> Path | None:
        """The local file holding the object at ``key``, when the store keeps objects as local files
        (a directory does); None otherwise — then use :meth:`get_file`."""
        return None

    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object at ``key`` into the local file ``dest``; :class:`ObjectNotFound` when it does not
        exist. This default reads it into memory; stores that can stream override it (S3 does)."""
        dest.write_bytes(self.get(key))

    def put_file(self, key: str, src: Path) -> None:
        """Write the local file ``src`` at ``key`` (atomically, like :meth:`put`). This default reads it
        into memory; stores that can stream override it (a directory and S3 do)."""
        self.put(key, src.read_bytes())
