"""Stage 3: run an experiment — spec → matrix → executor → store — and resume a run.

:func:`start_run` and :func:`resume_run` are what ``expkit run`` calls. They write the resolved spec
and the provenance manifest, run the prepare step, hand the missing cells to the executor, and
return a :class:`RunOutcome`. They never print; progress goes to ``on_event``.

A session writes a run only while it holds the run's lease (:mod:`expkit.stores.lease`): a second
writer of the same run is refused naming the holder, and a session that loses its lease stops. A full
disk ends the session with one line naming the path and the free space, the manifest saying so.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from expkit import __version__
from expkit.core.diskfull import disk_full_cause, disk_full_error
from expkit.core.errors import CanaryFailed, DiskFull, InputError, Interrupted
from expkit.executors.base import CellEvent, CellOutcome, Executor, RunContext
from expkit.executors.local import LocalExecutor
from expkit.runner.canary import EarlyStop, failure_hint, run_cells, spec_file
from expkit.runner.identity import check_identity, session_identity, settle_session
from expkit.runs.manifest import build_manifest, new_run_id, spec_file_text
from expkit.runs.matrix import Cell, build_matrix
from expkit.runs.provenance import available_cpus, utc_now
from expkit.runs.records import refuse_imported
from expkit.spec import LoadedSpec, load_spec, load_spec_text
from expkit.stores.base import MANIFEST_KEY, SPEC_KEY, RunStore
from expkit.stores.lease import Lease, acquire_lease

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """What a run (or a resumed session of it) achieved."""

    run_id: str
    store_url: str
    total: int
    succeeded: int
    failed: dict[str, str]  # cell -> reason, over the whole run
    ran: int  # cells executed in this session
    skipped: int  # cells already complete before this session
    duration_s: float
    warnings: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()  # one line per algorithm the early stop stopped scheduling
    hint: str | None = None  # the next step after failures, matching their cause

    @property
    def missing(self) -> int:
        """Cells with no record yet (neither succeeded nor failed)."""
        return self.total - self.succeeded - len(self.failed)

    @property
    def ok(self) -> bool:
        """Whether every cell of the run succeeded."""
        return not self.failed and self.missing == 0


class CellPlan(Protocol):
    """Which cells a session runs when that depends on the results so far: adaptive replicates
    (:mod:`expkit.adaptive.driver`) run a first wave and add the next waves as the earlier ones are decided.

    :meth:`first` is called once the run's lease is held, before the prepare step, with the run's context
    (its store and manifest), every cell of the run's matrix and the cells already recorded; it returns the
    cells to start with. :meth:`more` is the executor's ``more_cells`` hook
    (:class:`~expkit.executors.base.RunContext`). :meth:`total` is the number of cells the run has by now
    (the run's counts and status use it instead of the matrix's size)."""

    def first(self, ctx: RunContext, cells: Sequence[Cell], done: set[str]) -> list[Cell]:
        """The cells to start with."""
        ...

    def more(self, cell: Cell, outcome: CellOutcome | None) -> Sequence[Cell]:
        """The cells to add now that ``cell`` ended."""
        ...

    def total(self) -> int:
        """The run's cells as planned by now."""
        ...


@dataclass
class _Session:
    executor: Executor
    workers: int
    on_event: Callable[[CellEvent], None] = field(default=lambda e: None)
    lease: Lease | None = None
    canary: bool = False  # run one cell per algorithm first (a local executor only)
    early_stop: bool = False  # stop scheduling an algorithm whose first cells all failed alike
    guard: EarlyStop | None = None
    on_notice: Callable[[str], None] | None = None  # told when the early stop stops an algorithm
    plan: CellPlan | None = None  # cells chosen as results arrive (adaptive replicates)


def default_workers(loaded: LoadedSpec) -> int:
    """As many runs as the machine's CPUs allow for the spec's cpu request, capped by ``parallelism``."""
    spec = loaded.experiment.spec
    workers = max(1, int(available_cpus() / spec.resources.cpu + 1e-9))
    if spec.parallelism:
        workers = min(workers, spec.parallelism)
    return workers


def start_run(
    spec_path: str | Path,
    store: RunStore,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    workers: int | None = None,
    executor: Executor | None = None,
    on_event: Callable[[CellEvent], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
    canary: bool = False,
    early_stop: bool = False,
    on_notice: Callable[[str], None] | None = None,
    spec_dir: str | Path | None = None,
    plan: CellPlan | None = None,
) -> RunOutcome:
    """Run every cell of the spec at ``spec_path`` into ``store`` as a new run.

    The runs execute in ``spec_dir`` when given, else in the spec file's directory (a bundle's re-run:
    its spec is the bundle's, its code elsewhere); that directory's code is the run's code identity.

    ``on_start(run_id, n_cells)`` is called once the run exists in the store, before any cell runs. Failing
    fast (:mod:`expkit.runner.canary`; ``expkit run`` turns both on): with ``canary`` (and a local executor),
    one cell per algorithm runs first and a setup mistake stops the run
    (:class:`~expkit.core.errors.CanaryFailed`); with ``early_stop``, an algorithm whose first cells all
    fail alike is not scheduled any more, and ``on_notice`` is told so at once. ``plan``: the cells are
    chosen by it as results arrive (:class:`CellPlan`; adaptive replicates), not all of the matrix.
    """
    loaded = load_spec(spec_path, overrides)
    if spec_dir is not None:
        loaded = dataclasses.replace(loaded, path=Path(spec_dir) / Path(spec_path).name)
    cells = build_matrix(loaded.experiment)
    run_id = new_run_id(loaded.name, store.list_runs())
    n_workers = _workers(workers, loaded, len(cells))
    executor = executor or LocalExecutor()
    identity = session_identity(loaded, store, executor, cells)  # before the run exists: too much code is exit 2
    with _writing(store, run_id, executor, "expkit run") as lease:
        manifest = build_manifest(
            loaded,
            run_id,
            executor.name,
            n_workers,
            len(cells),
            code=identity.code if identity else None,
            environment=identity.environment if identity else None,
        )
        store.put(f"{run_id}/{SPEC_KEY}", spec_file_text(loaded).encode())
        store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
        log.info("run %s: %d cells, %d workers, store %s", run_id, len(cells), n_workers, store.url)
        if on_start:
            on_start(run_id, len(cells))
        session = _Session(executor, n_workers, on_event or _noop, lease, canary, early_stop, on_notice=on_notice)
        session.plan = plan
        return _execute(loaded, run_id, store, manifest, cells, set(), session)


def resume_run(
    run_ref: str,
    store: RunStore,
    *,
    spec_path: str | Path | None = None,
    rerun_failed: bool = False,
    allow_changes: bool = False,
    workers: int | None = None,
    executor: Executor | None = None,
    on_event: Callable[[CellEvent], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
    canary: bool = False,
    early_stop: bool = False,
    on_notice: Callable[[str], None] | None = None,
    plan: CellPlan | None = None,
) -> RunOutcome:
    """Run only the cells of an existing run that have no completion marker (and, with
    ``rerun_failed``, those that failed). The spec is the one stored with the run; ``spec_path``,
    when given, must resolve to the same spec and supplies the directory runs execute in.

    When the run's code or environment changed since its last session, :class:`InputError` names what
    changed, unless ``allow_changes``: then the change is recorded in the manifest (``changes``).
    ``canary``, ``early_stop``, ``on_notice``, ``plan``: as for :func:`start_run` (canaries: the first cells
    to do; ``plan`` is given the cells not yet recorded)."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    refuse_imported(manifest, run_id, "rerun the failed cells of" if rerun_failed else "resume")
    loaded = load_spec_text(store.spec_text(run_id), path=Path(f"{store.url}/{run_id}/{SPEC_KEY}"))
    spec_dir = _resume_dir(spec_path, manifest, run_id)
    loaded = LoadedSpec(loaded.experiment, spec_dir / "experiment.yml", manifest.get("overrides") or {}, ())
    executor = executor or LocalExecutor()
    with _writing(store, run_id, executor, "expkit run --resume") as lease:
        manifest = store.manifest(run_id)  # as the previous writer left it
        cells = build_matrix(loaded.experiment)
        identity = session_identity(loaded, store, executor, cells, manifest)
        check_identity(manifest, identity, run_id, allow_changes=allow_changes)
        done = store.completed_cells(run_id)
        if rerun_failed:  # a cell marked succeeded whose result.json is gone counts as failed
            records = store.checked_cell_records(run_id, done)
            done = {k for k, r in records.items() if r.get("status") == "succeeded"}
        todo = [c for c in cells if c.key not in done]
        n_workers = _workers(workers, loaded, len(todo))
        manifest["status"] = "running"
        store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
        if on_start:
            on_start(run_id, len(todo))
        session = _Session(executor, n_workers, on_event or _noop, lease, canary, early_stop, on_notice=on_notice)
        session.plan = plan
        return _execute(loaded, run_id, store, manifest, todo, done, session, total=len(cells))


def _resume_dir(spec_path: str | Path | None, manifest: dict[str, Any], run_id: str) -> Path:
    """The directory a resumed run's cells execute in: the given spec file's (which must be the run's spec),
    else the one the run was started from."""
    if spec_path is not None:
        given = load_spec(spec_path, manifest.get("overrides") or {})
        if given.sha256 != manifest.get("spec_sha256"):
            raise InputError(
                f"{spec_path} differs from the spec run {run_id} was started with; resume without "
                "FILE to use the stored spec, or start a new run"
            )
        return given.directory
    spec_dir = Path(manifest.get("spec_dir") or ".")
    if not spec_dir.is_dir():
        raise InputError(
            f"run {run_id} was started from {spec_dir}, which does not exist here: "
            "pass the spec file too, 'expkit run FILE --resume RUN'"
        )
    return spec_dir


@contextmanager
def _writing(store: RunStore, run_id: str, executor: Executor, command: str) -> Iterator[Lease]:
    """Hold run ``run_id``'s lease while the block runs: taken first (:class:`~expkit.stores.lease.LeaseHeld`
    when another session writes the run), renewed by a heartbeat, released however the block ends. When
    another session takes it over meanwhile, the executor is stopped and :class:`LeaseLost` raised."""
    lease = acquire_lease(store, run_id, command=command)
    stop = getattr(executor, "stop", None)

    def on_lost(err: Exception) -> None:
        log.info("stopping: %s", err)  # the caller gets the error itself once the executor has stopped
        if callable(stop):
            stop()

    lease.start_heartbeat(on_lost)
    try:
        yield lease
    except Interrupted as err:
        if lease.lost is not None:
            raise lease.lost from err
        raise
    finally:
        lease.release()


def _noop(event: CellEvent) -> None:
    return None


def _workers(requested: int | None, loaded: LoadedSpec, n_cells: int) -> int:
    if requested is not None and requested < 1:
        raise InputError(f"--workers {requested}: give at least 1")
    return max(1, min(requested or default_workers(loaded), max(n_cells, 1)))


def _execute(
    loaded: LoadedSpec,
    run_id: str,
    store: RunStore,
    manifest: dict[str, Any],
    cells: list[Cell],
    done: set[str],
    session: _Session,
    total: int | None = None,
) -> RunOutcome:
    ctx = RunContext(
        run_id=run_id,
        experiment=loaded.experiment,
        spec_dir=loaded.directory,
        store=store,
        workers=session.workers,
        on_event=session.on_event,
        manifest=manifest,
    )
    t0 = time.monotonic()
    if session.plan is not None:
        cells = session.plan.first(ctx, cells, done)
        ctx.more_cells = session.plan.more
    if session.early_stop:
        session.guard = EarlyStop(loaded.experiment, spec_file(loaded), on_notice=session.on_notice)
    outcomes = _run_session(ctx, cells, session, manifest)
    n_total = total if total is not None else len(cells)
    if session.plan is not None:
        n_total = session.plan.total()
    manifest["cells"] = n_total  # an adaptive run has the cells its waves chose (until completed)
    succeeded, failed = _tally(store, run_id, manifest, n_total)
    hint = failure_hint(failed, succeeded, run_id=run_id, experiment=loaded.experiment, spec_file=spec_file(loaded))
    return RunOutcome(
        run_id=run_id,
        store_url=store.url,
        total=n_total,
        succeeded=succeeded,
        failed=failed,
        ran=len(outcomes),
        skipped=len(done),
        duration_s=time.monotonic() - t0,
        warnings=loaded.warnings,
        stopped=tuple(session.guard.messages()) if session.guard else (),
        hint=hint,
    )


def _run_session(ctx: RunContext, cells: list[Cell], session: _Session, manifest: dict[str, Any]) -> list[CellOutcome]:
    """Run the prepare step and the cells; record the session in the manifest however it ends (unless
    it lost the run's lease: then the run is another session's to record)."""
    store, run_id = ctx.store, ctx.run_id
    started = utc_now()
    status, reason = "interrupted", None
    try:
        _clear_staging(store, run_id, all_sessions=True)  # under the lease: leftovers of killed sessions
        session.executor.run_prepare(ctx)
        canary = session.canary and session.executor.name == "local"
        spec = ctx.spec_dir / "experiment.yml" if session.guard is None else session.guard.spec_file
        lease = session.lease
        lost = (lambda: lease.lost) if lease is not None else (lambda: None)
        outcomes = run_cells(session.executor, ctx, cells, session.guard, canary=canary, spec_file=spec, lost=lost)
        status = "finished"
    except (Interrupted, KeyboardInterrupt):  # Ctrl-C or SIGTERM: the run is interrupted, not failed
        raise
    except CanaryFailed as err:  # a setup mistake: the manifest says which
        status, reason = "failed", str(err)
        raise
    except BaseException as err:
        status = "failed"
        full = _disk_full(err, store, run_id)
        if full is None:
            raise
        reason = str(full)
        raise full from err
    finally:
        _clear_staging(store, run_id)  # first: it frees the space a full disk needs for the manifest
        if session.lease is None or session.lease.lost is None:
            settle_session(manifest, ctx.spec_dir, store, session.executor)  # what the session left behind
            entry = {
                "started_at": started,
                "ended_at": utc_now(),
                "cells": len(cells),
                "workers": session.workers,
                "status": status,
                "expkit_version": __version__,
                "host": socket.gethostname(),
            }
            _record_session(store, run_id, manifest, entry, reason)
    return outcomes


def _clear_staging(store: RunStore, run_id: str, *, all_sessions: bool = False) -> None:
    """Remove this session's staged files (with ``all_sessions``: every session's; only under the lease)."""
    clear = getattr(store, "clear_staging", None)
    if callable(clear):
        clear(run_id, all_sessions=all_sessions)


def _disk_full(err: BaseException, store: RunStore, run_id: str) -> DiskFull | None:
    """A full disk behind ``err`` as one line naming the path, the space and how to resume; None otherwise."""
    cause = disk_full_cause(err)
    if cause is None:
        return None
    then = f"resume with 'expkit run --resume {run_id}'"
    if isinstance(cause, DiskFull):
        return disk_full_error(cause.path, needed=cause.needed, then=then)
    path = cause.filename if isinstance(cause, OSError) and isinstance(cause.filename, str) else None
    if path is None:  # a write into the session's staging directory (it says no more)
        try:
            path = str(store.staging_dir(run_id))
        except Exception:  # noqa: BLE001 - only for the message
            path = store.url
    return disk_full_error(path, then=then)


def _record_session(
    store: RunStore, run_id: str, manifest: dict[str, Any], entry: dict[str, Any], reason: str | None
) -> None:
    """Append the session ``entry`` to the manifest, set the run's status (and why it failed) and write it."""
    if reason:
        entry["reason"] = reason
        manifest["reason"] = reason
    else:
        manifest.pop("reason", None)
    manifest["sessions"].append(entry)
    manifest["ended_at"] = entry["ended_at"]
    manifest["status"] = entry["status"]
    _finish_manifest(store, run_id, manifest)


def _tally(store: RunStore, run_id: str, manifest: dict[str, Any], n_total: int) -> tuple[int, dict[str, str]]:
    """``(succeeded, failed)`` over the whole run (failed: cell -> reason); the final status and counts go
    into the manifest."""
    records = store.checked_cell_records(run_id)
    failed = {k: (r.get("reason") or "failed") for k, r in sorted(records.items()) if r.get("status") != "succeeded"}
    succeeded = sum(1 for r in records.values() if r.get("status") == "succeeded")
    manifest["status"] = "complete" if succeeded == n_total else ("partial" if len(records) < n_total else "failed")
    manifest["counts"] = {
        "total": n_total,
        "succeeded": succeeded,
        "failed": len(failed),
        "missing": n_total - len(records),
    }
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    return succeeded, failed


def _finish_manifest(store: RunStore, run_id: str, manifest: dict[str, Any]) -> None:
    try:
        store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    except Exception as err:  # noqa: BLE001 - never mask the original error while cleaning up
        log.warning("could not update the manifest of %s: %s", run_id, err)
