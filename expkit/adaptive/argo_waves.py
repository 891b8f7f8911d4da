"""Adaptive replicates on Argo: each wave is a workflow writing into the same run.

:func:`submit_adaptive` creates the run as ``expkit submit`` does (run id, manifest with the cluster, stored
spec) and submits its first wave — ``min_replicates`` replicates of every algorithm on every dataset — as
the run's first workflow. :func:`drive_waves` (``expkit submit --watch``, ``expkit status RUN --watch``)
then loops: sync the finished cells into the store, replay the decisions from the stored cells
(:class:`expkit.adaptive.driver.Waves`, so the manifest's decisions are the store's), and submit the next
wave of every dataset that is decided and not stopped as a workflow of its own — the path
``expkit retry`` takes for failed cells (:meth:`ArgoExecutor.submit`, ``<run-id>-retry-XXXXX``). A dataset's
next wave does not wait for the other datasets' waves. Interrupting it leaves the cluster running the
current workflows; running it again continues from the store and the manifest: the cells handed to a
workflow are recorded (``adaptive.submitted``), so none is submitted twice while its workflow runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from expkit.adaptive.driver import MANIFEST_BLOCK, Waves
from expkit.core.errors import ExecutionError, InputError, Interrupted
from expkit.executors.argo.client import ArgoClient
from expkit.executors.argo.executor import ArgoExecutor, Submission, artifact_key_prefix, check_images
from expkit.executors.argo.sync import RunStatus, sync_run
from expkit.executors.base import RunContext
from expkit.runs.manifest import build_manifest, new_run_id, spec_file_text
from expkit.runs.matrix import Cell, build_matrix
from expkit.spec import Experiment, load_spec, load_spec_text
from expkit.stores.base import MANIFEST_KEY, SPEC_KEY, RunStore

log = logging.getLogger(__name__)

#: Seconds between two looks at the cluster while waves run.
POLL_SECONDS = 1.0
#: How often a cell whose workflow ended without recording it is submitted again before giving up.
MAX_SUBMISSIONS = 3


def submit_adaptive(
    spec_path: str | Path,
    store: RunStore,
    argo: ArgoClient,
    *,
    overrides: Sequence[str] | dict[str, Any] = (),
    expkit_image: str | None = None,
) -> Submission:
    """Create a run of the adaptive spec at ``spec_path`` and submit its first wave as its first workflow."""
    loaded = load_spec(spec_path, overrides)
    if loaded.experiment.spec.adaptive is None:
        raise InputError(
            f"{spec_path}: spec.adaptive: the spec has no 'adaptive:' block: submit it with 'expkit submit'"
        )
    check_images(loaded, str(spec_path))
    artifact_key_prefix(store)  # an unusable store is bad input, before anything is asked of the cluster
    executor = ArgoExecutor(argo, expkit_image=expkit_image, wait=False)
    cluster = executor.cluster_block()
    cells = build_matrix(loaded.experiment)
    run_id = new_run_id(loaded.name, store.list_runs())
    workers = loaded.experiment.spec.parallelism or len(cells)
    manifest = build_manifest(loaded, run_id, executor.name, workers, len(cells))
    manifest.update(status="submitted", cluster=cluster)
    store.put(f"{run_id}/{SPEC_KEY}", spec_file_text(loaded).encode())
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    ctx = RunContext(run_id, loaded.experiment, loaded.directory, store, workers=workers, manifest=manifest)
    try:
        first = Waves(loaded.experiment).first(ctx, cells, set())
        _mark_submitted(manifest, first)
        return executor.submit(ctx, first, retry=False)
    except BaseException:
        _forget(store, run_id)
        raise


def drive_waves(
    argo: ArgoClient,
    store: RunStore,
    run_id: str,
    *,
    expkit_image: str | None = None,
    on_update: Callable[[RunStatus], None] | None = None,
    poll: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStatus:
    """Follow adaptive run ``run_id`` on the cluster until every dataset has stopped: sync, decide, submit
    the next waves; return the final status (synced into the store). Resumable: it continues from the
    store's cells and the manifest's record of the cells handed to workflows."""
    experiment = _stored_experiment(store, run_id)
    executor = ArgoExecutor(argo, expkit_image=expkit_image, wait=False)
    waves = Waves(experiment)
    cells = build_matrix(experiment)
    try:
        while True:
            status = sync_run(argo, store, run_id)
            if on_update is not None:
                on_update(status)
            new = _next_wave(waves, experiment, store, run_id, cells, status)
            if new is None:
                return status
            if new:
                manifest = waves.manifest()
                _mark_submitted(manifest, new)
                ctx = _context(experiment, store, run_id, manifest)
                sub = executor.submit(ctx, new, retry=True)
                log.info("adaptive run %s: wave of %d cells, workflow %s", run_id, len(new), sub.workflow)
                continue
            sleep(poll)
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped driving the waves of run {run_id}; its current workflows keep running on the cluster: "
            f"continue with 'expkit status {run_id} --watch', stop it with 'expkit stop {run_id}'"
        ) from None


def _next_wave(
    waves: Waves, experiment: Experiment, store: RunStore, run_id: str, cells: Sequence[Cell], status: RunStatus
) -> list[Cell] | None:
    """The cells to submit now ([] to wait), or None when the run is done (every dataset stopped and no
    workflow running)."""
    manifest = store.manifest(run_id)
    done = store.completed_cells(run_id)
    todo = waves.first(_context(experiment, store, run_id, manifest), cells, done)
    block = manifest.get(MANIFEST_BLOCK) or {}
    submitted: dict[str, int] = dict(block.get("submitted") or {})
    if not status.done:  # cells handed to a workflow that may still run them
        todo = [c for c in todo if c.key not in submitted]
        return todo
    if not todo:
        return None
    lost = [c.key for c in todo if submitted.get(c.key, 0) >= MAX_SUBMISSIONS]
    if lost:
        raise ExecutionError(
            f"run {run_id}: cell {lost[0]} was submitted {MAX_SUBMISSIONS} times and never recorded: look at "
            f"'expkit status {run_id}' and 'expkit logs {run_id} --cell {lost[0]}'"
        )
    return todo


def _context(experiment: Experiment, store: RunStore, run_id: str, manifest: dict[str, Any]) -> RunContext:
    workers = int(manifest.get("workers") or 1)
    spec_dir = Path(str(manifest.get("spec_dir") or "."))
    return RunContext(run_id, experiment, spec_dir, store, workers=workers, manifest=manifest)


def _mark_submitted(manifest: dict[str, Any], cells: Sequence[Cell]) -> None:
    """Count each cell's submissions in the manifest's ``adaptive.submitted`` (written by the submit)."""
    block = manifest.setdefault(MANIFEST_BLOCK, {})
    submitted = block.setdefault("submitted", {})
    for cell in cells:
        submitted[cell.key] = int(submitted.get(cell.key, 0)) + 1


def _stored_experiment(store: RunStore, run_id: str) -> Experiment:
    where = Path(f"{store.url}/{run_id}/{SPEC_KEY}")
    experiment = load_spec_text(store.spec_text(run_id), path=where).experiment
    if experiment.spec.adaptive is None:
        raise InputError(f"run {run_id} is not an adaptive run (its spec has no 'adaptive:' block)")
    return experiment


def _forget(store: RunStore, run_id: str) -> None:
    try:
        store.delete(f"{run_id}/")
    except Exception:
        log.exception("could not remove %s from %s", run_id, store.url)


__all__ = ["POLL_SECONDS", "drive_waves", "submit_adaptive"]
