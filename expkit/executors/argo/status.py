"""An Argo ``Workflow`` object, as the Kubernetes API returns it, read back into expkit cells — pure.

Argo keeps one node per DAG task, loop iteration, retry and pod in ``status.nodes`` (or, when the
workflow grows large, gzipped and base64-encoded in ``status.compressedNodes``). A cell of a
workflow rendered by :mod:`~expkit.executors.argo.render` is the node of a *cell template* (a
container template with the inputs ``algorithm``, ``dataset`` and ``replicate``): a ``Pod`` node,
or, with ``spec.retries``, a ``Retry`` node whose ``Pod`` children are the attempts. The cell key
comes from the node's resolved inputs, never from the node's name, so the explicit-cell (retry)
mode, whose node names differ, maps back the same way.

:func:`cell_records_from_workflow` turns every cell node into the ``run.json`` record the local
executor would write (status, reason, exit code, attempts with their history, start, end,
duration, the Kubernetes node it ran on); ``metrics`` stays ``None`` until the record is synced
next to the cell's ``result.json`` (see :func:`expkit.executors.argo.sync.sync_cells`).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from expkit.core.errors import ExpkitError
from expkit.runs.matrix import SEED_MODULUS, SEED_STRIDE

#: Node (and workflow) phases after which nothing changes any more.
DONE_PHASES = frozenset({"Succeeded", "Failed", "Error"})
#: The artifact Argo records for an archived main-container log (see docs/argo.md, "Outputs and logs").
LOG_ARTIFACT = "main-logs"
CELL_INPUTS = ("algorithm", "dataset", "replicate")
#: The inputs of a batch template (``kubernetes.cellsPerPod`` > 1): one pod runs several replicates.
BATCH_INPUTS = ("algorithm", "dataset", "replicates")
#: The batch pod's output parameter with its cells' outcomes (see :mod:`expkit.executors.argo.podrunner`).
BATCH_STATUS_PARAMETER = "cells"


class WorkflowStatusError(ExpkitError):
    """The workflow's node status cannot be read from the object (offloaded, corrupt)."""


@dataclass(frozen=True)
class WorkflowSummary:
    """One workflow at a glance: phase and per-status cell counts (``pending`` counts cells with no
    node yet, derived from the workflow's own fan-out)."""

    name: str
    phase: str
    message: str | None
    started_at: str | None
    finished_at: str | None
    total: int
    counts: dict[str, int] = field(default_factory=dict)  # pending / running / succeeded / failed
    failed: dict[str, str] = field(default_factory=dict)  # cell -> reason

    @property
    def done(self) -> bool:
        """Whether the workflow has finished (its phase is final)."""
        return self.phase in DONE_PHASES


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it (``2024-05-01T12:00:00Z``), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def workflow_nodes(workflow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``status.nodes`` of a workflow, decompressing ``status.compressedNodes`` when Argo compressed
    them. Raises :class:`WorkflowStatusError` when the nodes were offloaded to Argo's database."""
    status = workflow.get("status") or {}
    nodes = status.get("nodes")
    if isinstance(nodes, dict) and nodes:
        return nodes
    compressed = status.get("compressedNodes")
    if compressed:
        try:
            decoded = json.loads(gzip.decompress(base64.b64decode(compressed)))
        except (binascii.Error, OSError, ValueError) as err:
            raise WorkflowStatusError(
                f"workflow {_name(workflow)}: status.compressedNodes cannot be decoded ({err})"
            ) from err
        if not isinstance(decoded, dict):
            raise WorkflowStatusError(f"workflow {_name(workflow)}: status.compressedNodes is not a node map")
        return decoded
    if status.get("offloadNodeStatusVersion"):
        raise WorkflowStatusError(
            f"workflow {_name(workflow)}: its node status was offloaded to Argo's database "
            "(persistence.nodeStatusOffLoad), which the Kubernetes API does not serve: read it through the Argo "
            "server ('argo get') or turn offloading off for expkit runs"
        )
    return {}


def _name(workflow: Mapping[str, Any]) -> str:
    meta = workflow.get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName") or "?")


def cell_templates(workflow: Mapping[str, Any], inputs: tuple[str, ...] = CELL_INPUTS) -> set[str]:
    """Names of the workflow's cell templates: containers taking ``algorithm``, ``dataset`` and ``replicate``
    (with ``inputs=BATCH_INPUTS``: its batch templates, taking ``replicates``)."""
    names = set()
    for tmpl in (workflow.get("spec") or {}).get("templates") or []:
        declared = {p.get("name") for p in (tmpl.get("inputs") or {}).get("parameters") or []}
        if "container" in tmpl and all(i in declared for i in inputs):
            names.add(tmpl.get("name"))
    return names


def _inputs(node: Mapping[str, Any]) -> dict[str, Any]:
    return {
        str(p["name"]): p.get("value")
        for p in (node.get("inputs") or {}).get("parameters") or []
        if isinstance(p, Mapping) and isinstance(p.get("name"), str)
    }


def _cell_key(inputs: Mapping[str, Any]) -> str | None:
    values = [inputs.get(i) for i in CELL_INPUTS]
    texts = [v for v in values if isinstance(v, str) and v]
    if len(texts) != len(values):
        return None
    return "/".join(texts)


def _exit_code(node: Mapping[str, Any]) -> int | None:
    raw = (node.get("outputs") or {}).get("exitCode")
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _seconds(start: Any, end: Any) -> float | None:
    t0, t1 = parse_time(start), parse_time(end)
    if t0 is None or t1 is None:
        return None
    return round(max((t1 - t0).total_seconds(), 0.0), 4)


def _log_key(node: Mapping[str, Any]) -> str | None:
    for art in (node.get("outputs") or {}).get("artifacts") or []:
        if isinstance(art, Mapping) and art.get("name") == LOG_ARTIFACT:
            key = (art.get("s3") or {}).get("key")
            if isinstance(key, str) and key:
                return key
    return None


def _status_of(phase: str | None) -> str:
    if phase == "Succeeded":
        return "succeeded"
    if phase in ("Failed", "Error"):
        return "failed"
    if phase == "Running":
        return "running"
    return "pending"


def _reason(pod: Mapping[str, Any], top: Mapping[str, Any], exit_code: int | None, phase: str | None) -> str:
    message = str(pod.get("message") or top.get("message") or "").strip()
    if exit_code not in (None, 0) and "exit code" not in message:
        return f"exit code {exit_code}" + (f": {message}" if message else "")
    return message or (phase or "failed").lower()


def _seed(inputs: Mapping[str, Any]) -> int | None:
    try:
        return (int(inputs["datasetSeed"]) + int(inputs["replicate"]) * SEED_STRIDE) % SEED_MODULUS
    except (KeyError, TypeError, ValueError):
        return None


def _params(inputs: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        doc = json.loads(inputs.get("params") or "")
    except (TypeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _attempt_order(top: Mapping[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {child: i for i, child in enumerate(top.get("children") or [])}
    return sorted(
        pods, key=lambda n: (order.get(n.get("id"), len(order)), n.get("startedAt") or "", n.get("name") or "")
    )


def _cell_nodes(workflow: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The top node of every cell (its ``Retry`` node, else its first ``Pod``) and the cell's ``Pod`` nodes."""
    templates = cell_templates(workflow)
    tops: dict[str, dict[str, Any]] = {}
    pods: dict[str, list[dict[str, Any]]] = {}
    for node in workflow_nodes(workflow).values():
        if not isinstance(node, dict) or node.get("templateName") not in templates:
            continue
        key = _cell_key(_inputs(node))
        if key is None:
            continue
        kind = node.get("type")
        if kind == "Pod":
            pods.setdefault(key, []).append(node)
        if kind == "Retry" or (kind == "Pod" and key not in tops):
            tops[key] = node
    return tops, pods


def _attempt_history(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    history = []
    for i, pod in enumerate(attempts, 1):
        pod_status = _status_of(pod.get("phase"))
        history.append(
            {
                "attempt": i,
                "exit_code": _exit_code(pod),
                "status": pod_status,
                "reason": _reason(pod, {}, _exit_code(pod), pod.get("phase")) if pod_status == "failed" else None,
                "duration_s": _seconds(pod.get("startedAt"), pod.get("finishedAt")),
                "node": pod.get("hostNodeName"),
                "node_id": pod.get("id"),
            }
        )
    return history


def _given(workflow: Mapping[str, Any]) -> dict[str, dict[str, dict[str, str]]]:
    """Each cell template's container ``resources`` (requests and limits, quantities as text)."""
    given: dict[str, dict[str, dict[str, str]]] = {}
    for tmpl in (workflow.get("spec") or {}).get("templates") or []:
        res = ((tmpl.get("container") or {}).get("resources") or {}) if isinstance(tmpl, Mapping) else {}
        given[str(tmpl.get("name"))] = {
            kind: {str(k): str(v) for k, v in amounts.items()}
            for kind, amounts in res.items()
            if kind in ("requests", "limits") and isinstance(amounts, Mapping)
        }
    return given


def _resources(last: Mapping[str, Any], given: Mapping[str, dict[str, str]]) -> dict[str, Any]:
    """A cluster cell's ``resources``: its last pod's wall time and node, and the requests and limits of
    its container. CPU time and peak memory are not measured in a pod (None)."""
    return {
        "wall_s": _seconds(last.get("startedAt"), last.get("finishedAt")),
        "cpu_s": None,
        "max_rss_bytes": None,
        "requested": given.get("requests"),
        "limits": given.get("limits"),
        "node": last.get("hostNodeName"),
    }


def _cell_record(
    key: str,
    top: Mapping[str, Any],
    attempts: list[dict[str, Any]],
    workflow: str,
    given: Mapping[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    last = attempts[-1] if attempts else top
    phase = top.get("phase")
    status = _status_of(phase)
    if status == "pending" and any(p.get("phase") == "Running" for p in attempts):
        status = "running"
    exit_code = _exit_code(last)
    inputs = _inputs(top)
    algorithm, dataset, replicate = key.split("/")
    host = last.get("hostNodeName")
    return {
        "cell": key,
        "algorithm": algorithm,
        "dataset": dataset,
        "replicate": int(replicate) if replicate.isdigit() else replicate,
        "seed": _seed(inputs),
        "params": _params(inputs),
        "status": status,
        "phase": phase,
        "reason": _reason(last, top, exit_code, phase) if status == "failed" else None,
        "exit_code": exit_code,
        "attempts": max(len(attempts), 1 if status in ("succeeded", "failed") else 0),
        "attempt_history": _attempt_history(attempts),
        "started_at": top.get("startedAt"),
        "ended_at": top.get("finishedAt"),
        "duration_s": _seconds(top.get("startedAt"), top.get("finishedAt")),
        "host": host,
        "node": host,
        "executor": "argo",
        "workflow": workflow,
        "node_id": top.get("id"),
        "log_key": _log_key(last),
        "resources": _resources(last, given or {}),
        "metrics": None,
    }


def cell_records_from_workflow(workflow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every cell that has a node in ``workflow``, as a ``run.json`` record: ``{cell_key: record}``.

    ``status`` is ``succeeded`` / ``failed`` for finished cells (a record to store) and ``running``
    / ``pending`` otherwise. ``attempts`` counts the cell's pods (retries included) and
    ``attempt_history`` lists them; ``node`` is the Kubernetes node of the last attempt
    (``hostNodeName``); ``duration_s`` spans the cell node's start and finish; ``log_key`` is the
    bucket key of the last attempt's archived log, when Argo recorded one; ``resources`` has the last
    pod's wall time and node and the container's requests and limits; ``metrics`` is ``None``.
    """
    tops, pods = _cell_nodes(workflow)
    name = _name(workflow)
    given = _given(workflow)
    records: dict[str, dict[str, Any]] = {}
    for key, top in tops.items():
        attempts = _attempt_order(top, [p for p in pods.get(key, []) if top.get("type") == "Retry" or p is top])
        records[key] = _cell_record(key, top, attempts, name, given.get(str(top.get("templateName"))))
    batches = cell_templates(workflow, BATCH_INPUTS)
    for node in workflow_nodes(workflow).values() if batches else ():
        if isinstance(node, dict) and node.get("type") == "Pod" and node.get("templateName") in batches:
            records.update(_batch_records(node, name, given.get(str(node.get("templateName")))))
    return records


def _fan_out(workflow: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """``(dataset, algorithm, loop)`` per algorithm task of each dataset task of the entrypoint, where
    ``loop`` is ``("count", n)`` for ``withSequence`` or ``("items", list)`` for the ``withParam`` list
    the dataset passes (the explicit-cell mode)."""
    spec = workflow.get("spec") or {}
    templates = {t.get("name"): t for t in spec.get("templates") or []}
    cells = cell_templates(workflow) | cell_templates(workflow, BATCH_INPUTS)
    main = templates.get(spec.get("entrypoint")) or {}
    for task in (main.get("dag") or {}).get("tasks") or []:
        fan = templates.get(task.get("template")) or {}
        if "dag" not in fan:
            continue
        args = {p.get("name"): p.get("value") for p in (task.get("arguments") or {}).get("parameters") or []}
        defaults = {p.get("name"): p.get("default") for p in (fan.get("inputs") or {}).get("parameters") or []}
        dataset = str(args.get("dataset"))
        for atask in (fan.get("dag") or {}).get("tasks") or []:
            if atask.get("template") not in cells:
                continue
            aargs = {p.get("name"): p.get("value") for p in (atask.get("arguments") or {}).get("parameters") or []}
            algorithm = str(aargs.get("algorithm"))
            if "withSequence" in atask:
                try:
                    yield dataset, algorithm, ("count", int((atask["withSequence"] or {}).get("count", 0)))
                except (TypeError, ValueError):
                    continue
            elif isinstance(atask.get("withParam"), str):
                ref = atask["withParam"].strip()
                prefix = "{{inputs.parameters."
                if ref.startswith("["):  # a literal list (the whole matrix, batched)
                    try:
                        yield dataset, algorithm, ("items", json.loads(ref))
                    except ValueError:
                        continue
                elif ref.startswith(prefix) and ref.endswith("}}"):
                    pname = ref[len(prefix) : -2]
                    try:
                        items = json.loads(args.get(pname, defaults.get(pname)) or "[]")
                    except (TypeError, ValueError):
                        continue
                    yield dataset, algorithm, ("items", items if isinstance(items, list) else [])


def planned_cells(workflow: Mapping[str, Any]) -> set[str] | None:
    """The cell keys an explicit-cell workflow (a retry) runs; ``None`` for a workflow of the whole matrix."""
    keys: set[str] = set()
    for dataset, algorithm, (kind, value) in _fan_out(workflow):
        if kind == "count":
            return None
        keys.update(f"{algorithm}/{dataset}/{rep}" for rep in _flat(value))
    return keys


def expected_cell_count(workflow: Mapping[str, Any]) -> int:
    """How many cells the workflow runs, read from its own fan-out (0 for another shape)."""
    return sum(value if kind == "count" else len(_flat(value)) for _, _, (kind, value) in _fan_out(workflow))


#: A workflow with no controller-written status this long after its creation is reported as unattended.
UNATTENDED_SECONDS = 60.0


def unattended_note(workflow: Mapping[str, Any], now: datetime | None = None) -> str | None:
    """What to say about a workflow no controller has touched ``UNATTENDED_SECONDS`` after its creation (no
    status phase, no nodes): Argo's controller is not running or does not watch its namespace. None otherwise."""
    status = workflow.get("status") or {}
    if status.get("phase") or status.get("nodes") or status.get("startedAt"):
        return None
    meta = workflow.get("metadata") or {}
    created = parse_time(meta.get("creationTimestamp"))
    age = ((now or datetime.now(timezone.utc)) - created).total_seconds() if created is not None else 0.0
    if age < UNATTENDED_SECONDS:
        return None
    return (
        f"no Argo controller seems to be processing namespace {meta.get('namespace')} (no status "
        f"{int(age)}s after the workflow was created); run `expkit cluster check`"
    )


def summarize(workflow: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]] | None = None) -> WorkflowSummary:
    """Phase and cell counts of one workflow (``records`` as from :func:`cell_records_from_workflow`)."""
    records = cell_records_from_workflow(workflow) if records is None else records
    status = workflow.get("status") or {}
    total = max(expected_cell_count(workflow), len(records))
    counts, failed = count_cells(records, total)
    return WorkflowSummary(
        name=_name(workflow),
        phase=str(status.get("phase") or "Pending"),
        message=status.get("message") or unattended_note(workflow),
        started_at=status.get("startedAt"),
        finished_at=status.get("finishedAt"),
        total=total,
        counts=counts,
        failed=failed,
    )


def count_cells(records: Mapping[str, Mapping[str, Any]], total: int) -> tuple[dict[str, int], dict[str, str]]:
    """Per-status cell counts of ``records`` out of ``total`` cells (cells without a record count as
    ``pending``) and the reason of every failed cell, by cell key in order."""
    counts = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}
    failed: dict[str, str] = {}
    for key, rec in records.items():
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
        if rec["status"] == "failed":
            failed[key] = str(rec.get("reason") or "failed")
    counts["pending"] += max(total - len(records), 0)
    return counts, dict(sorted(failed.items()))


# ---------------------------------------------------------------------------------------------
# Batch pods (kubernetes.cellsPerPod > 1)
# ---------------------------------------------------------------------------------------------


def _flat(items: Any) -> list[Any]:
    """Loop items as replicates: a batched loop's items are lists of replicates."""
    out: list[Any] = []
    for item in items if isinstance(items, list) else []:
        out.extend(item if isinstance(item, list) else [item])
    return out


def _iso(unix: Any) -> str | None:
    if not isinstance(unix, (int, float)):
        return None
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _batch_outcomes(node: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """The runner's per-replicate outcomes from the pod's output parameter (none while it runs)."""
    for p in (node.get("outputs") or {}).get("parameters") or []:
        if isinstance(p, Mapping) and p.get("name") == BATCH_STATUS_PARAMETER:
            try:
                entries = json.loads(p.get("value") or "[]")
            except (TypeError, ValueError):
                return {}
            return {e["r"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("r"), int)}
    return {}


def _batch_cell(rep: int, entry: Mapping[str, Any] | None, node: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one replicate's record that differ from the pod's."""
    phase = node.get("phase")
    if entry is None:
        if phase in DONE_PHASES:
            why = str(node.get("message") or str(phase).lower())
            reason = f"not run to the end: its pod ended before this cell finished ({why})"
            return {"status": "failed", "phase": phase, "reason": reason, "attempts": 0, "attempt_history": []}
        return {"status": "running" if phase == "Running" else "pending", "phase": phase, "attempts": 0}
    history = [
        {
            "attempt": i,
            "exit_code": h[0],
            "status": "succeeded" if h[0] == 0 and not h[2] else "failed",
            "reason": h[2],
            "duration_s": h[1],
            "node": node.get("hostNodeName"),
            "node_id": node.get("id"),
        }
        for i, h in enumerate(entry.get("h") or [], 1)
        if isinstance(h, list) and len(h) == 3
    ]
    failed = bool(entry.get("m"))
    t0, t1 = entry.get("t0"), entry.get("t1")
    return {
        "status": "failed" if failed else "succeeded",
        "phase": "Failed" if failed else "Succeeded",
        "reason": entry.get("m") if failed else None,
        "exit_code": entry.get("x") if isinstance(entry.get("x"), int) else None,
        "attempts": max(len(history), 1),
        "attempt_history": history,
        "started_at": _iso(t0),
        "ended_at": _iso(t1),
        "duration_s": round(t1 - t0, 4) if isinstance(t0, (int, float)) and isinstance(t1, (int, float)) else None,
    }


def _batch_records(
    node: Mapping[str, Any], workflow: str, given: Mapping[str, dict[str, str]] | None
) -> dict[str, dict[str, Any]]:
    """One record per replicate of a batch pod (see :mod:`expkit.executors.argo.podrunner`): each cell's
    own outcome, or, when the pod ended before reporting it, failed with the pod's reason."""
    inputs = _inputs(node)
    try:
        reps = [r for r in json.loads(inputs.get("replicates") or "[]") if isinstance(r, int)]
    except (TypeError, ValueError):
        return {}
    outcomes = _batch_outcomes(node)
    records = {}
    for rep in reps:
        key = _cell_key({**inputs, "replicate": str(rep)})
        if key is None:
            continue
        rec = _cell_record(key, node, [], workflow, given)
        rec.update(seed=_seed({**inputs, "replicate": rep}), log_key=None, exit_code=None, reason=None)
        rec.update(_batch_cell(rep, outcomes.get(rep), node))
        rec["resources"]["wall_s"] = rec.get("duration_s")
        records[key] = rec
    return records
