"""Stage 3: run an experiment — spec → matrix → executor → store — and resume a run.

:func:`start_run` and :func:`resume_run` are what ``expkit run`` calls. They write the resolved spec
and the provenance manifest, run the prepare step, hand the missing cells to the executor, and
return a :class:`RunOutcome`. They never print; progress goes to ``on_event``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expkit import __version__
from expkit.core.errors import InputError, Interrupted
from expkit.executors.base import CellEvent, CellOutcome, Executor, RunContext
from expkit.executors.local import LocalExecutor
from expkit.runs.manifest import build_manifest, new_run_id, spec_file_text
from expkit.runs.matrix import Cell, build_matrix
from expkit.runs.provenance import available_cpus, utc_now
from expkit.spec import LoadedSpec, load_spec, load_spec_text
from expkit.stores.base import MANIFEST_KEY, SPEC_KEY, RunStore

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

    @property
    def missing(self) -> int:
        """Cells with no record yet (neither succeeded nor failed)."""
        return self.total - self.succeeded - len(self.failed)

    @property
    def ok(self) -> bool:
        """Whether every cell of the run succeeded."""
        return not self.failed and self.missing == 0


@dataclass
class _Session:
    executor: Executor
    workers: int
    on_event: Callable[[CellEvent], None] = field(default=lambda e: None)


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
) -> RunOutcome:
    """Run every cell of the spec at ``spec_path`` into ``store`` as a new run.

    ``on_start(run_id, n_cells)`` is called once the run exists in the store, before any cell runs.
    """
    loaded = load_spec(spec_path, overrides)
    cells = build_matrix(loaded.experiment)
    run_id = new_run_id(loaded.name, store.list_runs())
    n_workers = _workers(workers, loaded, len(cells))
    executor = executor or LocalExecutor()
    manifest = build_manifest(loaded, run_id, executor.name, n_workers, len(cells))
    store.put(f"{run_id}/{SPEC_KEY}", spec_file_text(loaded).encode())
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    log.info("run %s: %d cells, %d workers, store %s", run_id, len(cells), n_workers, store.url)
    if on_start:
        on_start(run_id, len(cells))
    return _execute(loaded, run_id, store, manifest, cells, set(), _Session(executor, n_workers, on_event or _noop))


def resume_run(
    run_ref: str,
    store: RunStore,
    *,
    spec_path: str | Path | None = None,
    rerun_failed: bool = False,
    workers: int | None = None,
    executor: Executor | None = None,
    on_event: Callable[[CellEvent], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
) -> RunOutcome:
    """Run only the cells of an existing run that have no completion marker (and, with
    ``rerun_failed``, those that failed). The spec is the one stored with the run; ``spec_path``,
    when given, must resolve to the same spec and supplies the directory runs execute in."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    loaded = load_spec_text(store.spec_text(run_id), path=Path(f"{store.url}/{run_id}/{SPEC_KEY}"))
    if spec_path is not None:
        given = load_spec(spec_path, manifest.get("overrides") or {})
        if given.sha256 != manifest.get("spec_sha256"):
            raise InputError(
                f"{spec_path} differs from the spec run {run_id} was started with; resume without "
                "FILE to use the stored spec, or start a new run"
            )
        spec_dir = given.directory
    else:
        spec_dir = Path(manifest.get("spec_dir") or ".")
        if not spec_dir.is_dir():
            raise InputError(
                f"run {run_id} was started from {spec_dir}, which does not exist here: "
                "pass the spec file too, 'expkit run FILE --resume RUN'"
            )
    loaded = LoadedSpec(loaded.experiment, spec_dir / "experiment.yml", manifest.get("overrides") or {}, ())
    cells = build_matrix(loaded.experiment)
    done = store.completed_cells(run_id)
    if rerun_failed:
        records = store.cell_records(run_id, done)
        done = {k for k, r in records.items() if r.get("status") == "succeeded"}
    todo = [c for c in cells if c.key not in done]
    n_workers = _workers(workers, loaded, len(todo))
    executor = executor or LocalExecutor()
    manifest["status"] = "running"
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    if on_start:
        on_start(run_id, len(todo))
    return _execute(
        loaded, run_id, store, manifest, todo, done, _Session(executor, n_workers, on_event or _noop), total=len(cells)
    )


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
    outcomes = _run_session(ctx, cells, session, manifest)
    n_total = total if total is not None else len(cells)
    succeeded, failed = _tally(store, run_id, manifest, n_total)
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
    )


def _run_session(ctx: RunContext, cells: list[Cell], session: _Session, manifest: dict[str, Any]) -> list[CellOutcome]:
    """Run the prepare step and the cells; record the session in the manifest however it ends."""
    store, run_id = ctx.store, ctx.run_id
    started = utc_now()
    status = "interrupted"
    try:
        if hasattr(store, "clear_staging"):
            store.clear_staging(run_id)
        session.executor.run_prepare(ctx)
        outcomes = session.executor.execute(ctx, cells)
        status = "finished"
    except Interrupted:
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        manifest["sessions"].append(
            {
                "started_at": started,
                "ended_at": utc_now(),
                "cells": len(cells),
                "workers": session.workers,
                "status": status,
                "expkit_version": __version__,
                "host": socket.gethostname(),
            }
        )
        manifest["ended_at"] = utc_now()
        manifest["status"] = status
        _finish_manifest(store, run_id, manifest)
        if hasattr(store, "clear_staging"):
            store.clear_staging(run_id)
    return outcomes


def _tally(store: RunStore, run_id: str, manifest: dict[str, Any], n_total: int) -> tuple[int, dict[str, str]]:
    """``(succeeded, failed)`` over the whole run (failed: cell -> reason); the final status and counts go
    into the manifest."""
    records = store.cell_records(run_id)
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
