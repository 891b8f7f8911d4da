"""A cluster run's status, and publishing its finished cells into the run store (the Argo executor's ``sync``).

Argo writes no ``run.json``: the cells of a run on Argo are published here, after the fact, from the
run's workflow objects (:mod:`~expkit.executors.argo.status` reads them).

* :func:`collect_status` / :func:`status_from_workflows` — the run as the cluster sees it, over all
  its workflows (the first and its retries);
* :func:`sync_cells` / :func:`sync_run` — write each finished cell's ``run.json`` (plus ``log.txt``)
  into the store, completion marker last, and update the manifest's status and counts;
* :func:`watch_run` — follow a workflow until it finishes, then sync;
* :func:`sync_for_results` — what ``expkit results`` runs first for a run on Argo whose cells lack
  their ``run.json``: it never fails, it says why the cluster could not be read.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from expkit.core.contract import LOG_FILE, RESULT_FILE, RUN_FILE, json_object_or_none, parse_result
from expkit.core.errors import ArtifactError, ExpkitError, StoreError
from expkit.core.safejson import parse_json
from expkit.executors.argo.client import ArgoClient
from expkit.executors.argo.errors import WorkflowNotFound
from expkit.executors.argo.status import (
    DONE_PHASES,
    WorkflowStatusError,
    WorkflowSummary,
    cell_records_from_workflow,
    count_cells,
    planned_cells,
    summarize,
    workflow_nodes,
)
from expkit.runs.environment import image_environment
from expkit.runs.provenance import utc_now
from expkit.runs.records import is_imported
from expkit.stores.base import MANIFEST_KEY, ObjectNotFound, RunStore, cell_prefix

log = logging.getLogger(__name__)

#: The probe step's template (see :mod:`expkit.executors.argo.render`) and what it writes into the run.
PROBE_TEMPLATE = "probe-environment"
ENVIRONMENT_KEY = "environment.json"
#: Environment variables that override the context and namespace a run's manifest records.
CONTEXT_ENV = "EXPKIT_KUBE_CONTEXT"
NAMESPACE_ENV = "EXPKIT_NAMESPACE"


@dataclass
class RunStatus:
    """A run as the cluster sees it, over all its workflows (the first and its retries)."""

    run_id: str
    phase: str  # the newest workflow's phase ("Running" while any workflow runs)
    workflows: list[WorkflowSummary]
    total: int
    counts: dict[str, int]
    failed: dict[str, str]
    records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    synced: int = 0

    @property
    def done(self) -> bool:
        """Every workflow of the run has finished."""
        return all(w.done for w in self.workflows)

    @property
    def ok(self) -> bool:
        """Finished, and every cell succeeded."""
        return self.done and self.phase == "Succeeded" and self.counts.get("succeeded", 0) == self.total

    def to_dict(self) -> dict[str, Any]:
        """The status as JSON-ready data (``expkit status --json``)."""
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "counts": dict(self.counts),
            # cells still pending once every workflow has finished will never run: "not started"
            "not_started": self.counts.get("pending", 0) if self.done else 0,
            "failed": dict(self.failed),
            "synced": self.synced,
            "workflows": [
                {
                    "name": w.name,
                    "phase": w.phase,
                    "message": w.message,
                    "started_at": w.started_at,
                    "finished_at": w.finished_at,
                    "cells": w.total,
                    "counts": dict(w.counts),
                }
                for w in self.workflows
            ],
        }


def _combine(
    workflows: Sequence[Mapping[str, Any]], per_workflow: Sequence[dict[str, dict[str, Any]]]
) -> dict[str, Any]:
    """Each cell's record from the newest workflow that plans it (``workflows`` oldest first)."""
    combined: dict[str, dict[str, Any]] = {}
    covered: set[str] = set()
    for wf, records in zip(reversed(workflows), reversed(per_workflow)):
        for key, rec in records.items():
            if key not in covered and key not in combined:
                combined[key] = rec
        planned = planned_cells(wf)
        if planned is None:  # a workflow of the whole matrix: older ones are hidden entirely
            break
        covered |= planned
    return combined


def status_from_workflows(run_id: str, workflows: Sequence[Mapping[str, Any]], total: int | None = None) -> RunStatus:
    """Combine the workflows of a run (oldest first): a cell's state is the one of the newest workflow that
    plans it, so a retry's pending cell hides the failure it is retrying."""
    per_workflow = [cell_records_from_workflow(wf) for wf in workflows]
    summaries = [summarize(wf, records) for wf, records in zip(workflows, per_workflow)]
    combined = _combine(workflows, per_workflow)
    n_total = total if total is not None else _planned_total(workflows, summaries)
    counts, failed = count_cells(combined, n_total)
    running = [s for s in summaries if not s.done]
    phase = (running[-1].phase if running else summaries[-1].phase) if summaries else "Unknown"
    if running and phase in DONE_PHASES:
        phase = "Running"
    elif not running and summaries and phase == "Succeeded" and counts.get("succeeded", 0) < n_total:
        # the newest workflow succeeded, but another shard of the run did not
        phase = next((s.phase for s in reversed(summaries) if s.phase != "Succeeded"), "Failed")
    return RunStatus(run_id, phase, summaries, n_total, counts, failed, combined)


def _planned_total(workflows: Sequence[Mapping[str, Any]], summaries: Sequence[WorkflowSummary]) -> int:
    """The run's cells as its workflows plan them: a whole-matrix workflow's count, else the union of the
    shards' and retries' cell lists."""
    keys: set[str] = set()
    for wf, summary in zip(workflows, summaries):
        planned = planned_cells(wf)
        if planned is None:
            return summary.total
        keys |= planned
    return len(keys)


def collect_status(argo: ArgoClient, run_id: str, total: int | None = None) -> RunStatus:
    """The cluster's view of run ``run_id``; :class:`WorkflowNotFound` when it has no workflow here."""
    workflows = argo.run_workflows(run_id)
    if not workflows:
        raise WorkflowNotFound(
            f"no workflow of run {run_id!r} in namespace {argo.namespace!r} on "
            f"{argo.target.describe()}: check --namespace and --context (finished workflows are "
            "deleted after their TTL, 7 days by default)"
        )
    return status_from_workflows(run_id, workflows, total)


def _bucket_reader(store: RunStore) -> Callable[[str], bytes | None]:
    """Read an object by its key relative to the bucket's root (where Argo archives logs)."""
    prefix = str(getattr(store, "prefix", "") or "").strip("/")
    lock = threading.Lock()
    root: list[RunStore] = []

    def read(key: str) -> bytes | None:
        try:
            if not prefix:
                return store.get(key)
            if key.startswith(prefix + "/"):
                return store.get(key[len(prefix) + 1 :])
            with lock:
                if not root:
                    s3: Any = store  # an S3Store: its bucket's root, same endpoint and credentials
                    root.append(type(s3)(s3.bucket, "", s3.config, cache=False))
            return root[0].get(key)
        except ObjectNotFound:
            return None
        except StoreError as err:
            log.warning("could not read the archived log %s: %s", key, err)
            return None

    return read


def _cells_to_write(store: RunStore, run_id: str, finished: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The finished cells whose stored record does not already reflect the same node and phase."""
    markers = {k: cell_prefix(run_id, k) + RUN_FILE for k in finished}
    existing = store.read_many(list(markers.values()))
    todo = []
    for key, rec in finished.items():
        old = json_object_or_none(existing.get(markers[key]))
        if old and all(old.get(f) == rec.get(f) for f in ("workflow", "node_id", "phase")):
            continue
        todo.append(key)
    return todo


def sync_cells(
    store: RunStore,
    run_id: str,
    records: Mapping[str, Mapping[str, Any]],
    *,
    metric: str | None = None,
    workers: int = 8,
) -> int:
    """Write the ``run.json`` of every finished cell in ``records`` into ``store`` (and its archived log as
    ``log.txt``), ``run.json`` last — after the cell's artifacts, which Argo uploaded before marking the node
    finished. A cell Argo reports as succeeded whose ``result.json`` is missing or invalid is recorded as
    failed, as a local run would be. Cells whose stored record already reflects the same node and phase are
    left alone. Returns the number of records written."""
    finished = {k: r for k, r in records.items() if r.get("status") in ("succeeded", "failed")}
    if not finished:
        return 0
    todo = _cells_to_write(store, run_id, finished)
    if not todo:
        return 0
    results = store.read_many(
        [cell_prefix(run_id, k) + RESULT_FILE for k in todo if finished[k]["status"] == "succeeded"]
    )
    read_log = _bucket_reader(store)

    def write(key: str) -> None:
        rec = dict(finished[key])
        prefix = cell_prefix(run_id, key)
        if rec["status"] == "succeeded":
            _judge_result(rec, results.get(prefix + RESULT_FILE), metric)
        if rec.get("log_key"):
            data = read_log(str(rec["log_key"]))
            if data is not None:
                store.put(prefix + LOG_FILE, data)
        store.put_json(prefix + RUN_FILE, rec)  # the completion marker, last

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))), thread_name_prefix="expkit-sync") as pool:
        list(pool.map(write, todo))
    log.info("run %s: synced %d cell records into %s", run_id, len(todo), store.url)
    return len(todo)


def _judge_result(rec: dict[str, Any], raw: bytes | None, metric: str | None) -> None:
    """Put the metrics of a succeeded cell's ``result.json`` into ``rec``, or mark it failed with the reason."""
    try:
        if raw is None:
            raise ArtifactError(
                f"exited 0 but wrote no {RESULT_FILE} in its output directory (or Argo did "
                "not upload it: check the artifact repository)"
            )
        rec["metrics"] = parse_result(raw, metric)["metrics"]
    except ArtifactError as err:
        rec.update(status="failed", reason=str(err))


def _update_manifest(store: RunStore, run_id: str, manifest: dict[str, Any], status: RunStatus) -> None:
    stored = store.cell_records(run_id)
    succeeded = sum(1 for r in stored.values() if r.get("status") == "succeeded")
    total = int(manifest.get("cells") or status.total)
    if status.done:
        manifest["status"] = "complete" if succeeded == total else ("partial" if len(stored) < total else "failed")
        manifest["ended_at"] = max((w.finished_at or "" for w in status.workflows), default="") or utc_now()
    else:
        manifest["status"] = "running"
    manifest["counts"] = {
        "total": total,
        "succeeded": succeeded,
        "failed": len(stored) - succeeded,
        "missing": total - len(stored),
    }
    cluster = manifest.setdefault("cluster", {})
    entries = {e.get("name"): e for e in cluster.setdefault("workflows", []) if isinstance(e, dict)}
    for w in status.workflows:
        entry = entries.get(w.name)
        if entry is None:
            entry = {"name": w.name}
            cluster["workflows"].append(entry)
        entry.update(phase=w.phase, message=w.message, started_at=w.started_at, finished_at=w.finished_at)
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)


def sync_run(argo: ArgoClient, store: RunStore, run_id: str) -> RunStatus:
    """Read the run's workflows and write every finished cell's ``run.json`` into the store; update the
    manifest's status and counts, and its ``environment`` once the probe step has finished. Returns the
    status (``synced``: records written now)."""
    manifest = store.manifest(run_id)
    workflows = argo.run_workflows(run_id)
    if not workflows:
        collect_status(argo, run_id)  # raises WorkflowNotFound with the message
    status = status_from_workflows(run_id, workflows, manifest.get("cells"))
    status.synced = sync_cells(store, run_id, status.records, metric=(manifest.get("metric") or {}).get("name"))
    _record_environment(store, run_id, manifest, workflows)
    _update_manifest(store, run_id, manifest, status)
    return status


def _probe_step(workflows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], str] | None:
    """The node of the environment probe step (the first workflow's) and the interpreter it ran, or None."""
    for wf in workflows:
        tmpl = next((t for t in (wf.get("spec") or {}).get("templates") or [] if t.get("name") == PROBE_TEMPLATE), None)
        if tmpl is None:
            continue
        interpreter = str(((tmpl.get("container") or {}).get("command") or ["python3"])[0])
        try:
            nodes = workflow_nodes(wf)
        except WorkflowStatusError:
            return None
        node = next(
            (n for n in nodes.values() if isinstance(n, dict) and n.get("templateName") == PROBE_TEMPLATE), None
        )
        return (node, interpreter) if node is not None else None
    return None


def _record_environment(
    store: RunStore, run_id: str, manifest: dict[str, Any], workflows: Sequence[Mapping[str, Any]]
) -> None:
    """Copy what the image reported (``<run-id>/environment.json``, written by the probe step) into the
    manifest's ``environment`` — or, when the probe failed (an image without Python), why there is none."""
    if isinstance(manifest.get("environment"), dict):
        return
    found_step = _probe_step(workflows)
    if found_step is None or found_step[0].get("phase") not in DONE_PHASES:
        return
    node, interpreter = found_step
    found: dict[str, Any] | None = None
    error = None
    try:
        doc = parse_json(store.get(f"{run_id}/{ENVIRONMENT_KEY}"))
        found = doc if isinstance(doc, dict) else None
    except ObjectNotFound:
        error = f"the image's Python ({interpreter}) could not be run: " + str(
            node.get("message") or node.get("phase") or "no output"
        )
    except (ExpkitError, ValueError) as err:
        error = f"{ENVIRONMENT_KEY} written by the image is not a JSON object: {err}"
    image = str(manifest.get("image") or "")
    manifest["environment"] = image_environment(found, image, interpreter, error)
    log.info("run %s: recorded the environment of image %s", run_id, image)


def watch_run(
    argo: ArgoClient,
    store: RunStore | None,
    run_id: str,
    workflow: str | Sequence[str],
    on_update: Callable[[RunStatus], None] | None = None,
) -> RunStatus:
    """Follow ``workflow`` of run ``run_id`` — or each of several (a sharded run's), one after the other —
    until it finishes, calling ``on_update`` with the run's status (over all its workflows) on every change;
    then sync the cells into ``store`` (when given) and return the final status."""
    names = [workflow] if isinstance(workflow, str) else list(workflow)
    total = None
    if store is not None:
        try:
            total = store.manifest(run_id).get("cells")
        except ExpkitError:
            total = None

    final: dict[str, Any] = {}
    others: list[dict[str, Any]] = []
    for name in names:
        others = [w for w in argo.run_workflows(run_id) if (w.get("metadata") or {}).get("name") != name]
        final = argo.watch_workflow(name, _notify(run_id, others, total, on_update))
    if store is None:
        return status_from_workflows(run_id, _in_order([*others, final]), total)
    return sync_run(argo, store, run_id)


def _notify(
    run_id: str, others: list[dict[str, Any]], total: int | None, on_update: Callable[[RunStatus], None] | None
) -> Callable[[dict[str, Any]], None]:
    def changed(obj: dict[str, Any]) -> None:
        if on_update is not None:
            on_update(status_from_workflows(run_id, _in_order([*others, obj]), total))

    return changed


def _in_order(workflows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Workflows oldest first, as :meth:`ArgoClient.list_workflows` returns them."""
    return sorted(
        workflows,
        key=lambda w: (
            (w.get("metadata") or {}).get("creationTimestamp") or "",
            (w.get("metadata") or {}).get("name") or "",
        ),
    )


# ---------------------------------------------------------------------------------------------
# Syncing before ``expkit results``
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultsSync:
    """What :func:`sync_for_results` did.

    ``synced`` cell records were written from the cluster ``where``; ``done`` and ``phase`` are the run's
    on the cluster (``done`` is True when nothing was asked of it); ``warning`` says why the cluster could
    not be read and what to run instead, or is None.
    """

    run_id: str | None = None
    synced: int = 0
    done: bool = True
    phase: str | None = None
    where: str | None = None
    warning: str | None = None


def _missing_cells(run_ref: str | None, store: RunStore) -> tuple[str, dict[str, Any], int] | None:
    """The run id, manifest and number of cells without ``run.json`` of a run on Argo that lacks some;
    None when there is nothing to sync (or the run cannot be read: ``results`` reports that itself)."""
    if not run_ref:
        return None
    try:
        run_id = store.resolve_run_id(run_ref)
        manifest = store.manifest(run_id)
    except ExpkitError:
        return None
    if (manifest or {}).get("executor") != "argo" or is_imported(manifest):
        return None  # an imported run is never synced from this machine's cluster
    total = int(manifest.get("cells") or 0)
    try:
        missing = total - len(store.completed_cells(run_id))
    except ExpkitError:
        return None
    return (run_id, manifest, missing) if missing > 0 else None


def _connect(context: str | None, namespace: str | None, context_from_env: bool) -> ArgoClient:
    """A client for the recorded context; when that context has another name here, the current one."""
    try:
        return ArgoClient(None, context, namespace)
    except ExpkitError as first:
        if not context or context_from_env:
            raise
        try:
            return ArgoClient(None, None, namespace)
        except ExpkitError:
            raise first from None


def sync_for_results(run_ref: str | None, store: RunStore, environ: Mapping[str, str] | None = None) -> ResultsSync:
    """For a run submitted to Argo whose cells lack their ``run.json``: sync them from the cluster, connecting
    with the run's recorded context and namespace (``$EXPKIT_KUBE_CONTEXT`` / ``$EXPKIT_NAMESPACE`` override
    them; a recorded context unknown here falls back to the current one). Never raises for the cluster:
    when it cannot be read, the result's ``warning`` says so and what to run; those cells stay missing."""
    env = os.environ if environ is None else environ
    found = _missing_cells(run_ref, store)
    if found is None:
        return ResultsSync()
    run_id, manifest, missing = found
    cluster = manifest.get("cluster") or {}
    context = env.get(CONTEXT_ENV) or cluster.get("context")
    namespace = env.get(NAMESPACE_ENV) or cluster.get("namespace")
    try:
        with _connect(context, namespace, bool(env.get(CONTEXT_ENV))) as argo:
            status = sync_run(argo, store, run_id)
            where = argo.target.describe()
    except ExpkitError as err:
        command = " ".join(
            [
                "expkit status",
                run_id,
                *([f"--context {context}"] if context else []),
                *([f"--namespace {namespace}"] if namespace else []),
            ]
        )
        return ResultsSync(
            run_id,
            warning=(
                f"run {run_id} ran on Argo and {missing} of its cells have no status in {store.url} yet, and the "
                f"cluster could not be read ({err}); they show as missing: sync them with '{command}'"
            ),
        )
    return ResultsSync(run_id, status.synced, status.done, status.phase, where)


__all__ = [
    "ResultsSync",
    "RunStatus",
    "collect_status",
    "status_from_workflows",
    "sync_cells",
    "sync_for_results",
    "sync_run",
    "watch_run",
]
