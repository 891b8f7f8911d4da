"""The Slurm executor: the :class:`~expkit.executors.base.Executor` contract kept by Slurm job arrays.

:class:`SlurmExecutor` is asynchronous (like Argo's with ``wait=False``): :meth:`SlurmExecutor.execute`
writes one batch script per resource profile (:mod:`.render`, pure), keeps it and its cell table in the
run (``<run-id>/slurm/<array>.sh`` and ``.cells.json``), submits it with ``sbatch`` and records the job
in the manifest (``manifest.slurm.arrays``, ``status: submitted``). The tasks publish their cells
themselves (:mod:`.task`); :func:`expkit.executors.slurm.status.sync_run` reads the state later. The
spec's ``prepare`` step is a job of its own that the arrays depend on (``afterok``), so its
:meth:`~SlurmExecutor.run_prepare` does nothing here.

:func:`submit_run` creates a run the way the runner does (:mod:`expkit.runs.manifest`) and submits all
its cells; :func:`retry_run` submits only the failed or missing cells into the same run; :func:`stop_run`
cancels the run's jobs.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from expkit.core.contract import RUN_FILE
from expkit.core.errors import InputError
from expkit.executors.base import CellOutcome, RunContext
from expkit.executors.slurm.client import SlurmClient
from expkit.executors.slurm.render import (
    ArrayPlan,
    cell_table,
    interpreter,
    plan_arrays,
    render_array_script,
    render_prepare_script,
)
from expkit.runs.code import code_identity
from expkit.runs.manifest import build_manifest, new_run_id, spec_file_text
from expkit.runs.matrix import Cell, build_matrix
from expkit.runs.provenance import utc_now
from expkit.spec import LoadedSpec, is_pinned, load_spec, load_spec_text
from expkit.stores.base import MANIFEST_KEY, SPEC_KEY, RunStore, cell_prefix

log = logging.getLogger(__name__)


def store_location(store: RunStore) -> str:
    """The store as the nodes open it: an absolute directory, or the ``s3://`` URL."""
    if store.url.startswith("s3://"):
        return store.url
    return str(Path(store.url).resolve())


def slurm_dir(store: RunStore, run_id: str) -> Path:
    """Where the run's scripts and the tasks' output files live on the shared filesystem: the run's own
    ``slurm/`` directory in a directory store, else ``./expkit-slurm/<run-id>`` (with an S3 store)."""
    if store.url.startswith("s3://"):
        return Path.cwd().resolve() / "expkit-slurm" / run_id
    return Path(store_location(store)) / run_id / "slurm"


def check_container(loaded: LoadedSpec, where: str) -> None:
    """``slurm.container: apptainer`` runs ``spec.image``: it must be pinned by digest."""
    slurm = loaded.experiment.spec.slurm
    if slurm and slurm.container and not is_pinned(loaded.experiment.spec.image):
        raise InputError(
            f"{where}: spec.slurm.container runs spec.image {loaded.experiment.spec.image!r}, which is not pinned "
            f"by digest: run 'expkit pin {where}' (or write image@sha256:<digest>)"
        )


class SlurmExecutor:
    """Submits cells as Slurm job arrays (asynchronous; see the module docstring)."""

    name = "slurm"

    def __init__(self, client: SlurmClient, *, python: str | None = None) -> None:
        self.client = client
        self.python = python or sys.executable

    def slurm_block(self, store: RunStore, run_id: str, spec_dir: Path) -> dict[str, Any]:
        """The manifest's ``slurm`` entry before any job: version, cluster, where the files go."""
        return {
            "version": self.client.version(),
            "cluster": self.client.cluster_name(),
            "store": store_location(store),
            "spec_dir": str(spec_dir),
            "dir": str(slurm_dir(store, run_id)),
            "python": self.python,
            "prepare_job": None,
            "arrays": [],
        }

    def run_prepare(self, ctx: RunContext) -> None:
        """Nothing here: the prepare step is a job of its own that every array depends on."""
        return None

    def execute(self, ctx: RunContext, cells: Sequence[Cell]) -> list[CellOutcome]:
        """Submit ``cells`` as job arrays and return at once (the tasks publish the cells)."""
        if cells:
            self.submit(ctx, cells, kind="run")
        return []

    def submit(self, ctx: RunContext, cells: Sequence[Cell], *, kind: str) -> list[dict[str, Any]]:
        """Write, keep and submit the arrays running ``cells``; record them in the manifest; return them."""
        manifest = ctx.manifest if ctx.manifest is not None else ctx.store.manifest(ctx.run_id)
        if not isinstance(manifest.get("slurm"), dict):  # a run created elsewhere (the runner)
            manifest["slurm"] = self.slurm_block(ctx.store, ctx.run_id, ctx.spec_dir)
        block = manifest["slurm"]
        exp = ctx.experiment
        base = Path(block["dir"])
        (base / "logs").mkdir(parents=True, exist_ok=True)
        python = interpreter(exp, self.python)
        where = {"store_url": block["store"], "spec_dir": block["spec_dir"], "python": python}
        common = [f"--chdir={block['spec_dir']}", "--kill-on-invalid-dep=yes"]
        dependency: list[str] = []
        if exp.spec.prepare is not None:  # once per session, as locally: a retry runs it again first
            script = render_prepare_script(exp, ctx.run_id, **where)
            path = self._keep(ctx, base, "prepare.sh", script)
            job = self.client.sbatch(str(path), [*common, f"--output={base / 'logs' / 'prepare-%j.out'}"])
            block["prepare_job"] = job
            dependency = [f"--dependency=afterok:{job}"]
        prefix = "array" if kind == "run" else f"retry{sum(1 for a in block['arrays'] if a.get('kind') == 'retry') + 1}"
        submitted = []
        by_key = {c.key: c for c in cells}
        manifest["status"] = "submitted"
        manifest["ended_at"] = None
        block.pop("stopped_at", None)  # a new submission: the run is no longer a stopped one
        cpus = self.client.cpus(exp.spec.slurm.partition if exp.spec.slurm else None)
        output_dir = f"@expkit-output-dir-{uuid.uuid4().hex}@"  # the task puts each attempt's directory here
        for plan in plan_arrays(exp, cells, prefix=prefix, cluster_cpus=cpus):
            script = render_array_script(exp, ctx.run_id, plan, parallelism=exp.spec.parallelism, **where)
            table = cell_table(exp, plan, by_key, manifest=manifest, output_dir=output_dir)
            ctx.store.put_json(f"{ctx.run_id}/slurm/{plan.name}.cells.json", table)
            path = self._keep(ctx, base, f"{plan.name}.sh", script)
            output = base / "logs" / f"{plan.name}-%A_%a.out"
            job = self.client.sbatch(str(path), [*common, *dependency, f"--output={output}"])
            submitted.append(_array_entry(plan, job, kind))
            block["arrays"].append(submitted[-1])
            ctx.store.put_json(f"{ctx.run_id}/{MANIFEST_KEY}", manifest)  # every job recorded as soon as it exists
            log.info("run %s: submitted %s as job %s (%d cells)", ctx.run_id, plan.name, job, plan.cells)
        return submitted

    @staticmethod
    def _keep(ctx: RunContext, base: Path, name: str, script: str) -> Path:
        """Keep the script in the run and on the shared filesystem (sbatch reads it from there)."""
        ctx.store.put(f"{ctx.run_id}/slurm/{name}", script.encode())
        path = base / name
        if not path.exists() or path.read_text() != script:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(script)
        return path


def _array_entry(plan: ArrayPlan, job: str, kind: str) -> dict[str, Any]:
    return {
        "name": plan.name,
        "job_id": job,
        "kind": kind,
        "cells": plan.cells,
        "tasks": len(plan.rows),
        "profile": plan.profile.sbatch_options(),
        "table": f"slurm/{plan.name}.cells.json",
        "submitted_at": utc_now(),
    }


def submit_run(
    spec_path: str | Path,
    store: RunStore,
    client: SlurmClient,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    python: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Submit the spec at ``spec_path`` as a new run: spec and manifest into ``store``, then the arrays.
    Returns the run id and the arrays submitted. When submitting fails, the run is removed again (and any
    job already submitted cancelled)."""
    loaded = load_spec(spec_path, overrides)
    check_container(loaded, str(spec_path))
    cells = build_matrix(loaded.experiment)
    executor = SlurmExecutor(client, python=python)
    container = bool(loaded.experiment.spec.slurm and loaded.experiment.spec.slurm.container)
    code = None if container else code_identity(loaded.directory, exclude=store.local_dirs())
    run_id = new_run_id(loaded.name, store.list_runs())
    workers = loaded.experiment.spec.parallelism or len(cells)
    manifest = build_manifest(loaded, run_id, executor.name, workers, len(cells), code=code)
    manifest.update(status="submitted", slurm=executor.slurm_block(store, run_id, loaded.directory))
    store.put(f"{run_id}/{SPEC_KEY}", spec_file_text(loaded).encode())
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    ctx = RunContext(run_id, loaded.experiment, loaded.directory, store, workers=workers, manifest=manifest)
    try:
        arrays = executor.submit(ctx, cells, kind="run")
    except BaseException:
        block = manifest.get("slurm") or {}
        jobs = [a["job_id"] for a in block.get("arrays", [])] + (
            [block["prepare_job"]] if block.get("prepare_job") else []
        )
        try:
            client.scancel(jobs)
        finally:
            store.delete(f"{run_id}/")
        raise
    return run_id, arrays


def slurm_block_of(run_id: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``slurm`` entry; InputError when the run was not submitted to Slurm."""
    block = manifest.get("slurm")
    if manifest.get("executor") != "slurm" or not isinstance(block, dict):
        raise InputError(
            f"run {run_id} ran on the {manifest.get('executor') or 'local'} executor, not on Slurm: "
            f"see it with 'expkit show {run_id}'"
        )
    return block


def run_jobs(manifest: Mapping[str, Any]) -> list[str]:
    """Every job id of a Slurm run: the prepare job and the arrays, oldest first."""
    block = manifest.get("slurm") or {}
    jobs = [str(block["prepare_job"])] if block.get("prepare_job") else []
    return jobs + [str(a["job_id"]) for a in block.get("arrays", [])]


def stop_run(client: SlurmClient, store: RunStore, run_ref: str) -> list[str]:
    """Cancel every job of the run that Slurm still has queued or running (``scancel``); the job ids
    cancelled. Cells already published stay; running ones are stopped and not published."""
    from expkit.executors.slurm.status import collect_status

    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    slurm_block_of(run_id, manifest)
    status = collect_status(client, store, run_id, manifest)
    live = [j for j, busy in status.jobs_busy.items() if busy]
    client.scancel(live)
    if live:  # the run's phase is "Stopped" from now on, however Slurm ends the cancelled tasks (CANCELLED,
        # FAILED with the task's exit 143, or already forgotten) — until a new submission into the run
        manifest["slurm"]["stopped_at"] = utc_now()
        store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    return live


def retry_run(
    client: SlurmClient, store: RunStore, run_ref: str, *, python: str | None = None
) -> tuple[str, list[dict[str, Any]]] | None:
    """Submit the failed or missing cells of a Slurm run as new arrays into the same run; None when every
    cell succeeded. Refused while a job of the run is still queued or running."""
    from expkit.executors.slurm.status import collect_status

    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    block = slurm_block_of(run_id, manifest)
    status = collect_status(client, store, run_id, manifest)
    if not status.done:
        raise InputError(
            f"run {run_id} still has queued or running tasks: wait for them ('expkit status {run_id}') "
            f"or stop them ('expkit stop {run_id}') first"
        )
    loaded = load_spec_text(store.spec_text(run_id), path=Path(f"{run_id}/experiment.yml"))
    records = store.cell_records(run_id)
    todo = [c for c in build_matrix(loaded.experiment) if (records.get(c.key) or {}).get("status") != "succeeded"]
    if not todo:
        return None
    for cell in todo:
        if cell.key in records:  # the old attempt goes, so a reader never sees its run.json next to new files
            store.delete(cell_prefix(run_id, cell.key))
    executor = SlurmExecutor(client, python=python or block.get("python"))
    ctx = RunContext(run_id, loaded.experiment, Path(block["spec_dir"]), store, workers=1, manifest=manifest)
    arrays = executor.submit(ctx, todo, kind="retry")
    log.info("run %s: retrying %d cells (%s)", run_id, len(todo), RUN_FILE)
    return run_id, arrays


__all__ = [
    "SlurmExecutor",
    "check_container",
    "retry_run",
    "run_jobs",
    "slurm_block_of",
    "slurm_dir",
    "stop_run",
    "store_location",
    "submit_run",
]
