"""The state of a run on Slurm, from the store and from Slurm, and its sync into the store.

The store decides first: a cell with its ``run.json`` is finished, whatever Slurm says. For the others,
the newest array that planned the cell says where its task is (``squeue`` while queued or running;
``sacct`` afterwards, or ``scontrol show job`` where accounting is off): ``pending``, ``running``, or
ended. A task Slurm ended without the cell's ``run.json`` — over its time limit, out of memory, a node
failure, a crash of the task itself — is published *failed* by :func:`sync_run` with Slurm's reason and
the task's output as ``log.txt``; a cancelled task (``expkit stop``) leaves its cells *missing*, as does
a job Slurm no longer knows, so ``expkit retry`` runs them.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expkit.core.contract import LOG_FILE, RUN_FILE
from expkit.executors.slurm.client import CANCELLED_STATES, FAILED_STATES, RUNNING_STATES, SlurmClient, TaskState
from expkit.runs.matrix import build_matrix
from expkit.runs.provenance import utc_now
from expkit.spec import load_spec_text
from expkit.stores.base import MANIFEST_KEY, RunStore

log = logging.getLogger(__name__)

WATCH_SECONDS = 2.0
_REASONS = {
    "TIMEOUT": "Slurm stopped its task at the time limit ({time}): raise spec.timeout",
    "OUT_OF_MEMORY": "its task ran out of memory ({mem}): raise spec.resources.memory",
    "NODE_FAIL": "its node failed: retry it with 'expkit retry {run}'",
    "PREEMPTED": "its task was preempted: retry it with 'expkit retry {run}'",
}


@dataclass(frozen=True)
class ArrayView:
    """One job of the run as ``status`` shows it (``name``, ``phase``, ``message`` like Argo's workflows)."""

    name: str
    job_id: str
    phase: str
    message: str | None = None


@dataclass
class SlurmStatus:
    """A run on Slurm over all its arrays (the first and its retries)."""

    run_id: str
    phase: str
    workflows: list[ArrayView]
    total: int
    counts: dict[str, int]
    failed: dict[str, str]
    records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    jobs_busy: dict[str, bool] = field(default_factory=dict)
    synced: int = 0
    to_sync: dict[str, tuple[str, TaskState, dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        """No task of the run is queued or running."""
        return not any(self.jobs_busy.values())

    @property
    def ok(self) -> bool:
        """Finished, and every cell succeeded."""
        return self.done and self.counts.get("succeeded", 0) == self.total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``expkit status --json``)."""
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "counts": dict(self.counts),
            "failed": dict(self.failed),
            "synced": self.synced,
            "jobs": [
                {"name": w.name, "job_id": w.job_id, "phase": w.phase, "message": w.message} for w in self.workflows
            ],
        }


def _job_phase(states: Mapping[int, TaskState], tasks: int) -> tuple[str, bool]:
    """A job's phase and whether it is busy (a task queued or running)."""
    kinds = [s.state for s in states.values()]
    if any(k in RUNNING_STATES for k in kinds):
        return "Running", True
    if any(k == "PENDING" for k in kinds):
        return "Pending", True
    if not kinds:
        return "Gone", False  # purged from Slurm's memory (MinJobAge) and no accounting
    if any(k in FAILED_STATES for k in kinds):
        return "Failed", False
    if any(k in CANCELLED_STATES for k in kinds):
        return "Cancelled", False
    return "Completed", False


def _cell_arrays(store: RunStore, run_id: str, block: Mapping[str, Any]) -> dict[str, tuple[str, int, dict[str, Any]]]:
    """Each cell's newest array: ``{cell: (job id, task index, array entry)}``."""
    owner: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for entry in block.get("arrays", []):
        table = json.loads(store.get(f"{run_id}/{entry['table']}"))["rows"]
        for index, row in enumerate(table):
            for key in row:
                owner[str(key)] = (str(entry["job_id"]), index, entry)
    return owner


def collect_status(
    client: SlurmClient, store: RunStore, run_id: str, manifest: Mapping[str, Any] | None = None
) -> SlurmStatus:  # long: one pass over the cells, each judged from the store, then from Slurm
    """The run's status: counts, failed cells with reasons, each job's phase; what :func:`sync_run` would
    publish is in ``to_sync``."""
    manifest = manifest if manifest is not None else store.manifest(run_id)
    block = manifest.get("slurm") or {}
    arrays = list(block.get("arrays", []))
    prepare = str(block["prepare_job"]) if block.get("prepare_job") else None
    jobs = ([prepare] if prepare else []) + [str(a["job_id"]) for a in arrays]
    states = client.task_states(jobs)
    if prepare:  # a plain job: squeue/sacct list it without an array index
        states[prepare] = _plain_job(client, prepare)
    views, busy = [], {}
    for job in jobs:
        entry = next((a for a in arrays if str(a["job_id"]) == job), None)
        phase, is_busy = _job_phase(states[job], int(entry["tasks"]) if entry else 1)
        busy[job] = is_busy
        views.append(ArrayView(entry["name"] if entry else "prepare", job, phase))
    records = store.cell_records(run_id)
    owner = _cell_arrays(store, run_id, block)
    counts = {"succeeded": 0, "failed": 0, "running": 0, "pending": 0, "missing": 0}
    failed: dict[str, str] = {}
    to_sync: dict[str, tuple[str, TaskState, dict[str, Any]]] = {}
    keys = sorted(set(owner) | set(records))
    for key in keys:
        rec = records.get(key)
        if rec is not None:
            ok = rec.get("status") == "succeeded"
            counts["succeeded" if ok else "failed"] += 1
            if not ok:
                failed[key] = str(rec.get("reason") or "failed")
            continue
        job, index, entry = owner[key]
        state = states.get(job, {}).get(index)
        kind = state.state if state else None
        if kind == "PENDING":
            counts["pending"] += 1
        elif kind in RUNNING_STATES:
            counts["running"] += 1
        elif state is not None and (kind in FAILED_STATES or kind == "COMPLETED"):
            reason = _reason(state, entry, run_id)
            counts["failed"] += 1
            failed[key] = reason
            to_sync[key] = (reason, state, entry)
        else:
            counts["missing"] += 1
    total = int(manifest.get("cells") or len(keys))
    counts["missing"] += max(0, total - len(keys))
    status = SlurmStatus(run_id, "", views, total, counts, failed, records, busy, 0, to_sync)
    status.phase = _phase(status, states.get(prepare) if prepare else None, stopped=bool(block.get("stopped_at")))
    return status


def _plain_job(client: SlurmClient, job: str) -> dict[int, TaskState]:
    done = client.run(["squeue", "-h", "-j", job, "-o", "%T"], check=False)
    state = done.stdout.strip()
    if not state:
        shown = client.run(["scontrol", "-o", "show", "job", job], check=False).stdout
        fields = dict(tok.split("=", 1) for tok in shown.split() if "=" in tok)
        state = fields.get("JobState", "")
        if not state:
            acct = client.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "State"], check=False).stdout.split()
            state = acct[0] if acct else ""
    return {0: TaskState(state)} if state else {}


def _phase(status: SlurmStatus, prepare: Mapping[int, TaskState] | None, *, stopped: bool = False) -> str:
    """The run's phase; ``stopped``: ``expkit stop`` cancelled its jobs (the manifest says so), so cells left
    missing are the stop's, whatever state Slurm gave the cancelled tasks."""
    c = status.counts
    prep_state = (prepare or {}).get(0)
    if prep_state is not None and prep_state.state in FAILED_STATES:
        return "Failed (the prepare step failed: see its log, prepare.log in the run)"
    if c["running"]:
        return "Running"
    if c["pending"]:
        return "Pending"
    if c["succeeded"] == status.total:
        return "Succeeded"
    if (stopped or any(w.phase == "Cancelled" for w in status.workflows)) and c["missing"]:
        return "Stopped"
    return "Failed"


def _reason(state: TaskState, entry: Mapping[str, Any], run_id: str) -> str:
    profile = " ".join(entry.get("profile") or [])
    time_opt = next(
        (p.split("=", 1)[1] + " min" for p in entry.get("profile") or [] if p.startswith("--time=")),
        "the partition's limit: the spec sets no timeout",
    )
    mem_opt = next((p.split("=", 1)[1] for p in entry.get("profile") or [] if p.startswith("--mem=")), "--mem")
    template = _REASONS.get(state.state)
    what = f"Slurm task {entry.get('job_id')}: {state.state}"
    if state.exit_code:
        what += f" (exit {state.exit_code})"
    if template:
        return f"{what}; " + template.format(time=time_opt, mem=mem_opt, run=run_id)
    return (
        f"{what}; the task ended without publishing this cell ({profile}): see its output with 'expkit logs {run_id}'"
    )


def sync_run(client: SlurmClient, store: RunStore, run_id: str) -> SlurmStatus:
    """Read the run's state and publish the cells Slurm ended without a ``run.json`` as failed (with the
    task's output as ``log.txt``); update the manifest's status and counts. Returns the status."""
    manifest = store.manifest(run_id)
    status = collect_status(client, store, run_id, manifest)
    if status.to_sync:
        spec = load_spec_text(store.spec_text(run_id), path=Path(f"{run_id}/experiment.yml")).experiment
        cells = {c.key: c for c in build_matrix(spec)}
        block = manifest.get("slurm") or {}
        for key, (reason, state, entry) in status.to_sync.items():
            cell = cells.get(key)
            if cell is None or store.exists(f"{run_id}/runs/{key}/{RUN_FILE}"):
                continue
            record = {
                "cell": key,
                "algorithm": cell.algorithm,
                "dataset": cell.dataset,
                "replicate": cell.replicate,
                "seed": cell.seed,
                "params": dict(cell.params),
                "status": "failed",
                "reason": reason,
                "exit_code": None,
                "attempts": 1,
                "ended_at": utc_now(),
                "executor": "slurm",
                "node": state.node,
                "metrics": None,
                "slurm": {"array_job_id": entry.get("job_id"), "state": state.state, "version": block.get("version")},
            }
            output = _task_output(block, entry, key, store, run_id)
            _publish_failed(store, run_id, key, record, output)
            status.records[key] = record
            status.synced += 1
    _update_manifest(store, run_id, manifest, status)
    return status


def _task_output(
    block: Mapping[str, Any], entry: Mapping[str, Any], key: str, store: RunStore, run_id: str
) -> Path | None:
    table = json.loads(store.get(f"{run_id}/{entry['table']}"))["rows"]
    index = next((i for i, row in enumerate(table) if key in row), None)
    if index is None:
        return None
    path = Path(str(block.get("dir", ""))) / "logs" / f"{entry['name']}-{entry['job_id']}_{index}.out"
    return path if path.is_file() else None


def _publish_failed(store: RunStore, run_id: str, key: str, record: dict[str, Any], output: Path | None) -> None:
    stage = store.staging_dir(run_id) / f"slurm-sync-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    try:
        if output is not None:
            shutil.copyfile(output, stage / LOG_FILE)
        (stage / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        store.publish_cell(run_id, key, stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _update_manifest(store: RunStore, run_id: str, manifest: dict[str, Any], status: SlurmStatus) -> None:
    stored = store.cell_records(run_id)
    succeeded = sum(1 for r in stored.values() if r.get("status") == "succeeded")
    total = int(manifest.get("cells") or status.total)
    if status.done:
        manifest["status"] = "complete" if succeeded == total else ("partial" if len(stored) < total else "failed")
        manifest["ended_at"] = manifest.get("ended_at") or utc_now()
    else:
        manifest["status"] = "running"
    manifest["counts"] = {
        "total": total,
        "succeeded": succeeded,
        "failed": len(stored) - succeeded,
        "missing": total - len(stored),
    }
    jobs = {w.job_id: w.phase for w in status.workflows}
    for entry in (manifest.get("slurm") or {}).get("arrays", []):
        entry["phase"] = jobs.get(str(entry.get("job_id")), entry.get("phase"))
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)


def watch_run(
    client: SlurmClient,
    store: RunStore,
    run_id: str,
    on_update: Callable[[SlurmStatus], None],
    *,
    interval: float = WATCH_SECONDS,
    timeout: float | None = None,
) -> SlurmStatus:
    """Sync the run every ``interval`` seconds until no task is queued or running (or ``timeout``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = sync_run(client, store, run_id)
        on_update(status)
        if status.done or (deadline is not None and time.monotonic() > deadline):
            return status
        time.sleep(interval)


__all__ = ["ArrayView", "SlurmStatus", "collect_status", "sync_for_results", "sync_run", "watch_run"]


def sync_for_results(run_ref: str | None, store: RunStore) -> tuple[SlurmStatus | None, str | None]:
    """Before ``expkit results``: sync a Slurm run whose cells lack their ``run.json`` (the status, or
    None when there is nothing to sync) and a warning when Slurm cannot be read (never raises for it)."""
    from expkit.core.errors import ExpkitError

    if not run_ref:
        return None, None
    try:
        run_id = store.resolve_run_id(run_ref)
        manifest = store.manifest(run_id)
        if manifest.get("executor") != "slurm" or int(manifest.get("cells") or 0) <= len(store.completed_cells(run_id)):
            return None, None
    except ExpkitError:
        return None, None  # results reports an unreadable run itself
    try:
        return sync_run(SlurmClient(), store, run_id), None
    except ExpkitError as err:
        return None, (
            f"run {run_id} ran on Slurm and some cells have no status in {store.url} yet, and Slurm could not be "
            f"read ({err}); they show as missing: sync them with 'expkit status {run_id}' on the cluster"
        )
