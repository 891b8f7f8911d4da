"""Operations on runs on Argo: submit, retry, stop, a run's pods (for logs), the runs of a namespace.

* :func:`submit_run` — create the run the way :mod:`expkit.runner` does (run id, manifest and stored spec
  from :mod:`expkit.runs.manifest`; the manifest also records the cluster) and hand its cells to the
  :class:`~expkit.executors.argo.executor.ArgoExecutor`, which creates the Workflow with server-side
  strict field validation; on ``409 AlreadyExists`` the run is forgotten and another id is tried;
* :func:`retry_run` — only the failed or missing cells, as a new workflow writing into the same run id;
* :func:`stop_run`, :func:`cell_pods` (with :meth:`ArgoClient.pod_log`), :func:`list_cluster_runs`.

Status, sync and watch are in :mod:`~expkit.executors.argo.sync`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit.core.errors import InputError
from expkit.executors.argo.client import ArgoClient
from expkit.executors.argo.errors import WorkflowConflict, WorkflowNotFound
from expkit.executors.argo.executor import ArgoExecutor, Submission, artifact_key_prefix, check_images
from expkit.executors.argo.names import (
    BATCH_ANNOTATION,
    CELL_ANNOTATION,
    LABEL_EXPERIMENT,
    LABEL_RUN_ID,
    WORKFLOW_LABEL,
)
from expkit.executors.argo.shards import LABEL_SHARDS, LABEL_SUBMISSION
from expkit.executors.argo.status import DONE_PHASES
from expkit.executors.argo.sync import sync_run
from expkit.executors.base import RunContext
from expkit.runs.manifest import build_manifest, new_run_id, spec_file_text
from expkit.runs.matrix import Cell, build_matrix
from expkit.runs.records import refuse_imported
from expkit.spec import LoadedSpec, load_spec, load_spec_text
from expkit.stores.base import MANIFEST_KEY, SPEC_KEY, RunStore

log = logging.getLogger(__name__)

SUBMIT_ATTEMPTS = 5


# ---------------------------------------------------------------------------------------------
# Submit, retry, stop
# ---------------------------------------------------------------------------------------------


def submit_run(
    spec_path: str | Path,
    store: RunStore,
    argo: ArgoClient,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    expkit_image: str | None = None,
    attempts: int = SUBMIT_ATTEMPTS,
) -> Submission:
    """Submit the spec at ``spec_path`` as a new run: write the spec and the manifest into ``store``, render and
    validate the workflow, create it (strict field validation). On 409 the run id is taken on the cluster: the
    store objects are removed and another id is tried (``attempts`` in all)."""
    loaded = load_spec(spec_path, overrides)
    check_images(loaded, str(spec_path))
    artifact_key_prefix(store)  # an unusable store is bad input, before anything is asked of the cluster
    cells = build_matrix(loaded.experiment)
    executor = ArgoExecutor(argo, expkit_image=expkit_image, wait=False)
    executor.cluster_block()  # the cluster's versions, asked once
    conflicts: list[str] = []
    last: WorkflowConflict | None = None
    for _ in range(max(1, attempts)):
        ctx = _create_run(loaded, store, executor, len(cells))
        try:
            return executor.submit(ctx, cells, retry=False)
        except WorkflowConflict as err:
            _forget(store, ctx.run_id)
            conflicts.append(ctx.run_id)
            last = err
            log.info("workflow %s already exists in %s: trying another run id", ctx.run_id, argo.namespace)
        except BaseException:
            _forget(store, ctx.run_id)
            raise
    raise WorkflowConflict(
        f"{last}; tried run ids {', '.join(conflicts)}: delete old workflows of experiment "
        f"{loaded.name!r} from namespace {argo.namespace!r} or use another namespace"
    ) from last


def _create_run(loaded: LoadedSpec, store: RunStore, executor: ArgoExecutor, n_cells: int) -> RunContext:
    """A new run in ``store`` — id, manifest (``submitted``, with the cluster) and resolved spec — as the
    runner creates one; the context to hand its cells to the executor with."""
    run_id = new_run_id(loaded.name, store.list_runs())
    workers = loaded.experiment.spec.parallelism or n_cells
    manifest = build_manifest(loaded, run_id, executor.name, workers, n_cells)
    manifest.update(status="submitted", cluster=executor.cluster_block())
    store.put(f"{run_id}/{SPEC_KEY}", spec_file_text(loaded).encode())
    store.put_json(f"{run_id}/{MANIFEST_KEY}", manifest)
    return RunContext(run_id, loaded.experiment, loaded.directory, store, workers=workers, manifest=manifest)


def _forget(store: RunStore, run_id: str) -> None:
    try:
        store.delete(f"{run_id}/")
    except Exception:
        log.exception("could not remove %s from %s", run_id, store.url)


def _no_workflow(argo: ArgoClient, run_id: str) -> WorkflowNotFound:
    return WorkflowNotFound(
        f"no workflow of run {run_id!r} in namespace {argo.namespace!r} on "
        f"{argo.target.describe()}: check --namespace and --context"
    )


def stop_run(argo: ArgoClient, run_id: str) -> list[str]:
    """Stop every unfinished workflow of the run (``spec.shutdown: Stop``: running pods are stopped, nothing
    new starts, exit handlers run). Returns the names of the workflows stopped."""
    workflows = argo.run_workflows(run_id)
    if not workflows:
        raise _no_workflow(argo, run_id)
    stopped = []
    for wf in workflows:
        name = str((wf.get("metadata") or {}).get("name"))
        if ((wf.get("status") or {}).get("phase") or "") in DONE_PHASES:
            continue
        argo.patch_workflow(name, {"spec": {"shutdown": "Stop"}})
        stopped.append(name)
    return stopped


def _refuse_busy(run_id: str, workflows: Sequence[Mapping[str, Any]]) -> None:
    busy = [w for w in workflows if ((w.get("status") or {}).get("phase") or "") not in DONE_PHASES]
    if busy:
        name = (busy[0].get("metadata") or {}).get("name")
        phase = (busy[0].get("status") or {}).get("phase") or "Pending"
        raise InputError(
            f"workflow {name} of run {run_id} is still {phase}: wait for it ('expkit status {run_id}') "
            f"or stop it ('expkit stop {run_id}') first"
        )


def retry_run(argo: ArgoClient, store: RunStore, run_ref: str, *, expkit_image: str | None = None) -> Submission | None:
    """Resubmit only the cells of run ``run_ref`` that failed or never finished, as a new workflow writing into
    the same run id (finished cells are kept). ``None`` when every cell succeeded."""
    run_id = store.resolve_run_id(run_ref)
    manifest = store.manifest(run_id)
    refuse_imported(manifest, run_id, "retry")
    if manifest.get("executor") != "argo":
        raise InputError(
            f"run {run_id} ran with the {manifest.get('executor')} executor, not on Argo: rerun its "
            f"failed cells with 'expkit run --resume {run_id} --rerun-failed'"
        )
    workflows = argo.run_workflows(run_id)
    _refuse_busy(run_id, workflows)
    if workflows:
        sync_run(argo, store, run_id)
    where = f"{store.url}/{run_id}/{SPEC_KEY}"
    loaded = load_spec_text(store.spec_text(run_id), path=Path(where))
    check_images(loaded, where)
    done = {k for k, r in store.cell_records(run_id).items() if r.get("status") == "succeeded"}
    todo: list[Cell] = [c for c in build_matrix(loaded.experiment) if c.key not in done]
    if not todo:
        return None
    executor = ArgoExecutor(argo, expkit_image=expkit_image, wait=False)
    workers = int(manifest.get("workers") or len(todo))
    ctx = RunContext(run_id, loaded.experiment, loaded.directory, store, workers=workers, manifest=manifest)
    return executor.submit(ctx, todo, retry=True)


# ---------------------------------------------------------------------------------------------
# Logs, listing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellPod:
    """One pod of a cell (one attempt)."""

    cell: str
    pod: str
    workflow: str
    phase: str
    node: str | None
    attempt: int
    created_at: str


def _wanted(cell: str, algorithm: str | None, dataset: str | None, replicate: int | None) -> bool:
    alg, ds, rep = cell.split("/")
    return not (
        (algorithm is not None and alg != algorithm)
        or (dataset is not None and ds != dataset)
        or (replicate is not None and rep != str(replicate))
    )


def _cell_order(cell: str) -> tuple[str, str, int]:
    alg, ds, rep = cell.split("/")
    return alg, ds, int(rep) if rep.isdigit() else 0


def _pod_cells(annotations: Mapping[str, Any]) -> list[str]:
    """The cells a pod runs: its ``expkit.io/cell``, or each replicate of a batch pod's ``expkit.io/cells``
    (``<algorithm>/<dataset>/[0,1,2]``)."""
    cell = annotations.get(CELL_ANNOTATION)
    if isinstance(cell, str) and cell:
        return [cell]
    batch = annotations.get(BATCH_ANNOTATION)
    if not isinstance(batch, str) or batch.count("/") < 2:
        return []
    alg, ds, reps = batch.split("/", 2)
    try:
        values = json.loads(reps)
    except ValueError:
        return []
    return [f"{alg}/{ds}/{r}" for r in values if isinstance(r, int)] if isinstance(values, list) else []


def cell_pods(
    argo: ArgoClient,
    run_id: str,
    *,
    algorithm: str | None = None,
    dataset: str | None = None,
    replicate: int | None = None,
) -> list[CellPod]:
    """The pods of the run's cells (found by the ``workflows.argoproj.io/workflow`` label of each of the run's
    workflows and the ``expkit.io/cell`` annotation), filtered, in cell order then attempt order. Pods of
    succeeded cells are usually gone (``podGC: OnPodSuccess``): their logs are in the store's ``log.txt``."""
    workflows = argo.run_workflows(run_id)
    if not workflows:
        raise _no_workflow(argo, run_id)
    found: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    for wf in workflows:
        wf_name = str((wf.get("metadata") or {}).get("name"))
        for pod in argo.list_pods(f"{WORKFLOW_LABEL}={wf_name}"):
            meta = pod.get("metadata") or {}
            for cell in _pod_cells(meta.get("annotations") or {}):
                if cell.count("/") != 2 or not _wanted(cell, algorithm, dataset, replicate):
                    continue
                found.setdefault(cell, []).append((meta.get("creationTimestamp") or "", pod, wf_name))
    out: list[CellPod] = []
    for cell in sorted(found, key=_cell_order):
        attempts = sorted(found[cell], key=lambda t: (t[0], t[1]["metadata"]["name"]))
        for attempt, (created, pod, wf_name) in enumerate(attempts, 1):
            phase = str((pod.get("status") or {}).get("phase") or "")
            node = (pod.get("spec") or {}).get("nodeName")
            out.append(CellPod(cell, pod["metadata"]["name"], wf_name, phase, node, attempt, created))
    return out


@dataclass(frozen=True)
class ClusterWorkflow:
    """An expkit workflow in the namespace (``expkit list --cluster``)."""

    run_id: str
    workflow: str
    experiment: str
    phase: str
    progress: str | None
    started_at: str | None
    finished_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        return dict(self.__dict__)


def list_cluster_runs(argo: ArgoClient) -> list[ClusterWorkflow]:
    """Workflows carrying the expkit labels in the namespace, newest first; the shards of one submission of a
    run are one row (``workflow``: the first shard's name and how many there are; the phase of the least
    advanced; progress summed)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for wf in argo.list_workflows(LABEL_RUN_ID):
        meta = wf.get("metadata") or {}
        labels = meta.get("labels") or {}
        group = labels.get(LABEL_SUBMISSION) if labels.get(LABEL_SHARDS) else None
        groups.setdefault((labels.get(LABEL_RUN_ID, ""), group or f"workflow:{meta.get('name')}"), []).append(wf)
    out = [_cluster_row(members) for members in groups.values()]
    return sorted(out, key=lambda w: (w.started_at or "", w.workflow), reverse=True)


def _cluster_row(members: Sequence[Mapping[str, Any]]) -> ClusterWorkflow:
    first = members[0]
    meta = first.get("metadata") or {}
    labels = meta.get("labels") or {}
    statuses = [m.get("status") or {} for m in members]
    phases = [s.get("phase") or "Pending" for s in statuses]
    phase = next((p for p in ("Pending", "Running", "Error", "Failed") if p in phases), phases[0])
    progress = [s.get("progress") for s in statuses]
    if len(members) > 1 and all(isinstance(p, str) and p.count("/") == 1 for p in progress):
        pairs = [str(p).split("/") for p in progress]
        done, planned = sum(int(a) for a, _ in pairs), sum(int(b) for _, b in pairs)
        progress = [f"{done}/{planned}"]
    starts = [
        s.get("startedAt") or (m.get("metadata") or {}).get("creationTimestamp") for s, m in zip(statuses, members)
    ]
    ends = [s.get("finishedAt") for s in statuses]
    name = str(meta.get("name", ""))
    return ClusterWorkflow(
        labels.get(LABEL_RUN_ID, ""),
        name if len(members) == 1 else f"{name} (+{len(members) - 1} shards)",
        labels.get(LABEL_EXPERIMENT, ""),
        phase,
        progress[0] if len(members) == 1 or len(progress) == 1 else None,
        min((t for t in starts if t), default=None),
        None if any(e is None for e in ends) else max(e for e in ends if e),
    )


__all__ = [
    "SUBMIT_ATTEMPTS",
    "CellPod",
    "ClusterWorkflow",
    "cell_pods",
    "list_cluster_runs",
    "retry_run",
    "stop_run",
    "submit_run",
]
